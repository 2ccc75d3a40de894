"""The demo's production gates: ``review`` and ``human-desk`` run in production, so the two
agents that message them (``drafting``, and ``review`` itself, which escalates to the desk)
must be certified first (mesh.domain.gates).

The whole fleet attaches in staging. The desk moves to production at once (it messages only
``intake``, a staging agent, so it needs no certification). Each agent to certify is judged;
on a fresh mesh the kill-switch gate fails (no drill of its version yet), and ``review``'s own
sidecar refuses a message to the desk, on the record. A drill of its staging instance (a
signed halt, its acknowledgement, a resume) then passes, the certification is granted and
``review`` moves to production. A later run finds the certifications still valid and says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from mesh.adapters.drills import read_drills
from mesh.adapters.gates import certify, drill_agent, load_profile
from mesh.adapters.keyfiles import trust_anchors
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.drills import CANARY
from mesh.domain.gates import PRODUCTION, certified_for_production
from mesh.domain.identity import PublicKeys
from mesh.domain.moments import utc_text
from mesh.errors import AgentRefusedError, MeshError
from mesh.settings import Cluster
from sidecar.core import Sidecar

__all__ = ["certify_fleet"]

Say = Callable[[str], None]
#: Agents that run in production, in the order they move there.
PRODUCTION_AGENTS = ("human-desk", "review")
#: Agents that message production agents: certified before the work starts.
TO_CERTIFY = ("review", "drafting")
_BY = "mesh demo (operator)"


async def certify_fleet(
    cluster: Cluster, serde: Serde, fleet: Mapping[str, Sidecar], say: Say
) -> None:
    """Certify the agents that message production ones and move the production agents there;
    raise MeshError if a certification cannot be had."""
    codec = MessageCodec(serde, PublicKeys())
    await _fleet_drill_passing(cluster, codec, say)
    desk = fleet["human-desk"]
    await desk.move_to(PRODUCTION)
    await _until(lambda: _sees(fleet, envs={"human-desk"}), "the desk in production")
    for name in TO_CERTIFY:
        await _certify(cluster, codec, fleet, name, say)
    await fleet["review"].move_to(PRODUCTION)
    await _until(
        lambda: _sees(fleet, envs=set(PRODUCTION_AGENTS), certified=set(TO_CERTIFY)),
        "every sidecar seeing the certifications",
    )
    say(f"gates: {' and '.join(PRODUCTION_AGENTS)} run in production; {', '.join(TO_CERTIFY)} "
        "certified to message them")  # fmt: skip


async def _certify(
    cluster: Cluster, codec: MessageCodec, fleet: Mapping[str, Sidecar], name: str, say: Say
) -> None:
    me = fleet[name]
    record = me.agents()[name]
    if certified_for_production(record, int(time.time() * 1000)):
        say(f"gates: {name} v{record.version} certified for production until "
            f"{utc_text(record.certified_until_ms)} (an earlier run)")  # fmt: skip
        return
    profile, digest = load_profile(None)
    verdict = await asyncio.to_thread(certify, cluster, codec, name, _BY, profile, digest)
    if not verdict.granted:
        say(f"gates: {name} refused production, gates failing: {', '.join(verdict.failing)}")
        if name == "review":
            await _until(lambda: bool(me.agents()[name].gates_failing), "the refusal recorded")
            try:
                await me.send("human-desk", data={"probe": "before certification"})
            except AgentRefusedError as exc:
                say(f"{name:<11} !! refused: {exc}")
        drill = await asyncio.to_thread(drill_agent, cluster, codec, name, profile, 5.0)
        if not drill.ok:
            raise MeshError(f"the drill of {name} failed: {drill.failure}")
        say(f"gates: {name} drill passed: halt acknowledged in {drill.halt_ms:.0f} ms, "
            f"resumed in {drill.resume_ms:.0f} ms")  # fmt: skip
        verdict = await asyncio.to_thread(certify, cluster, codec, name, _BY, profile, digest)
    if not verdict.granted:
        raise MeshError(f"{name} cannot be certified: gates failing {', '.join(verdict.failing)}")
    say(f"gates: {name} v{record.version} certified for production until "
        f"{utc_text(verdict.expires_at_ms)}")  # fmt: skip


async def _fleet_drill_passing(cluster: Cluster, codec: MessageCodec, say: Say) -> None:
    """Until the scheduled drill of the canary has passed (a gate reads it): `mesh up` runs
    the first one as soon as the canary and the kill-switch are up."""
    signers = trust_anchors(cluster.settings)
    deadline = time.monotonic() + 60
    said = False
    while True:
        last = (await asyncio.to_thread(read_drills, cluster, codec, signers)).get(CANARY)
        if last is not None and last.ok:
            return
        if time.monotonic() > deadline:
            why = "never ran" if last is None else f"failed: {last.failure}"
            raise MeshError(f"the scheduled kill-switch drill {why}; see `mesh drill show`")
        if not said:
            say("gates: waiting for the scheduled kill-switch drill to pass")
            said = True
        await asyncio.sleep(1)


def _sees(fleet: Mapping[str, Sidecar], envs: set[str], certified: set[str] | None = None) -> bool:
    now_ms = int(time.time() * 1000)
    for sidecar in fleet.values():
        agents = sidecar.agents()
        if any(a not in agents or agents[a].environment != PRODUCTION for a in envs):
            return False
        if any(not certified_for_production(agents.get(a), now_ms) for a in certified or ()):
            return False
    return True


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise MeshError(f"the demo timed out waiting for {what}")
        await asyncio.sleep(0.1)
