"""The scheduled kill-switch drill: prove, every few minutes, that the mesh can still halt.

The drill service hosts the canary agent's sidecar (:data:`mesh.domain.drills.CANARY`) and,
on a schedule, runs the whole path an emergency would: a halt of the canary signed with this
host's operator key (the record `mesh halt` publishes), the canary's sidecar applying it and
acknowledging it on telemetry (``HALT_ACK``, written before the sidecar reports the halt
applied), then a resume and the canary acting again. Each step is timed from signing and
producing the command to the canary having acted on it, and bounded by ``deadline_s``. It also
checks that the kill-switch processor, which issues the automatic halts, is heartbeating. The
result, pass or fail, is published signed on ``mesh.drills.v1`` (and so audited); `mesh
status` is unhealthy while the last drill failed or is overdue.

What a failed drill catches: an operator key the sidecars no longer trust, a sidecar whose
control follower died, a control topic that cannot be written, a stopped kill-switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from mesh.adapters.commands import publish_command
from mesh.adapters.drills import publish_drill
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.keyfiles import operator_key
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, agent_command
from mesh.domain.drills import CANARY, DrillResult
from mesh.domain.identity import PublicKeys
from mesh.errors import MeshError
from mesh.settings import Cluster
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec

__all__ = ["Drill", "canary_sidecar"]

Say = Callable[[str], None]


def canary_sidecar(cluster: Cluster, serde: Serde, agent_id: str = CANARY) -> Sidecar:
    spec = AgentSpec(agent_id, ("canary",), "halted and resumed by the scheduled kill-switch drill")
    return Sidecar(cluster, serde, spec, heartbeat_s=2.0)


class Drill:
    """Drills of one canary (its sidecar started by the caller), one at a time."""

    def __init__(
        self,
        cluster: Cluster,
        canary: Sidecar,
        every_s: float = 300.0,
        deadline_s: float = 5.0,
        killswitch_stale_s: float = 15.0,
    ) -> None:
        self.cluster, self.canary = cluster, canary
        self.every_s, self.deadline_s = every_s, deadline_s
        self.killswitch_stale_s = killswitch_stale_s
        self.codec = MessageCodec(canary.serde, PublicKeys())
        self.last: DrillResult | None = None
        # kept for every command, as the kill-switch keeps its own: the drill times the halt
        # path, not a new producer's connection and producer id
        self._producer = Producer(producer_config(cluster))

    async def run_once(self) -> DrillResult:
        """One drill, published; the result carries the counts on from the last."""
        started_ms = int(time.time() * 1000)
        ids: list[str] = []
        halt_ms = resume_ms = None
        try:
            self._killswitch_alive()
            halt_ms = await self._halt(ids)
            resume_ms = await self._resume(ids)
            failure = None
        except (MeshError, TimeoutError) as exc:
            failure = str(exc) or f"a step did not finish within {self.deadline_s:g}s"
            if len(ids) == 1:  # halted but not resumed: never leave the canary halted
                await self._lift_quietly(ids[0])
        result = DrillResult(
            self.canary.agent_id, started_ms, failure is None, self.every_s, halt_ms,
            resume_ms, failure, command_ids=tuple(ids),
        ).after(self.last)  # fmt: skip
        await asyncio.to_thread(publish_drill, self.cluster, self.codec, result)
        self.last = result
        return result

    async def run_forever(self, say: Say, settle_s: float = 30.0) -> None:
        """Drill every ``every_s``; the first once the canary is registered and the
        kill-switch has heartbeat (or ``settle_s`` passed: then the drill says what is
        missing)."""
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and not self._settled():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        while True:
            result = await self.run_once()
            if result.ok:
                say(f"drill: passed, halt acknowledged in {result.halt_ms:.0f} ms, resumed in "
                    f"{result.resume_ms:.0f} ms")  # fmt: skip
            else:
                say(f"drill: FAILED ({result.failures_in_row} in a row): {result.failure}")
            await asyncio.sleep(self.every_s)

    def _settled(self) -> bool:
        agents = self.canary.agents()
        return self.canary.agent_id in agents and self.canary.plane.killswitch_age_s() is not None

    async def _lift_quietly(self, halt_id: str) -> None:
        record = self._command(
            Action.RESUME, "the scheduled drill failed; its halt of the canary is lifted", halt_id
        )
        with contextlib.suppress(MeshError):  # the next drill finds the canary halted, says so
            await asyncio.to_thread(
                publish_command, self.cluster, self.codec, record, self._producer
            )

    def _killswitch_alive(self) -> None:
        age = self.canary.plane.killswitch_age_s()
        if age is None:
            raise MeshError("the kill-switch processor has never heartbeat: it is not running")
        if age > self.killswitch_stale_s:
            raise MeshError(f"the kill-switch processor's last heartbeat is {age:.0f}s old")

    async def _halt(self, ids: list[str]) -> float:
        """Milliseconds from signing and producing the halt to the canary's sidecar having
        applied it, its HALT_ACK written first (``sidecar.plane.apply``)."""
        record = self._command(Action.HALT, "scheduled kill-switch drill", None)
        ids.append(str(record["command_id"]))
        elapsed = await self._until_applied(record, lambda: self._halted_by(record))
        if elapsed is None:
            raise MeshError(
                f"the canary's sidecar did not apply and acknowledge the drill halt within "
                f"{self.deadline_s:g}s: its control follower may be dead, or it no longer "
                f"trusts the operator key {record['requested_by']!r}"
            )
        return elapsed

    async def _resume(self, ids: list[str]) -> float:
        """Milliseconds from signing and producing the resume to the canary acting again."""
        record = self._command(Action.RESUME, "scheduled kill-switch drill over", ids[0])
        ids.append(str(record["command_id"]))
        elapsed = await self._until_applied(record, lambda: self.canary.halt is None)
        if elapsed is None:
            raise MeshError(f"the canary was still halted {self.deadline_s:g}s after the resume")
        return elapsed

    def _command(self, action: Action, reason: str, lifts: str | None) -> dict[str, Any]:
        operator = operator_key(self.cluster.settings).agent_id
        return agent_command(
            action, self.canary.agent_id, reason=reason, requested_by=operator, lifts=lifts
        )

    async def _until_applied(
        self, record: dict[str, Any], applied: Callable[[], bool]
    ) -> float | None:
        started = time.monotonic()  # the canary may act before the producer hears back
        await asyncio.to_thread(publish_command, self.cluster, self.codec, record, self._producer)
        while not applied():
            if time.monotonic() - started > self.deadline_s:
                return None
            await asyncio.sleep(0.002)
        return (time.monotonic() - started) * 1000

    def _halted_by(self, record: dict[str, Any]) -> bool:
        halt = self.canary.halt
        return halt is not None and halt.get("command_id") == record["command_id"]
