"""Halt and resume commands: their record, their key on the control topic, and the book of
halts in force (pure). The kill-switch, ``mesh halts``/``mesh resume`` and the sidecar all fold
the control topic through :class:`HaltBook`, so they agree on who is halted.

Keys: one agent or an agent and its dependants -> the agent id; a capability ->
``capability:NAME``; the fleet -> ``*``; one chain of messages -> ``chain:CORRELATION``.

A chain halt stops a chain, not its agents: every record carrying that correlation id is
refused by every sidecar (:func:`chain_halt`), while the same agents go on serving other
chains. Its ``affected_agents`` name the chain's participants for the record only.

Control is ordered, so no one can lift a halt by replaying an old record
(``docs/security/control.md``):

* a RESUME names the halt it lifts (``lifts``: its command id) and lifts it only if that halt
  is the one in force under its key, so a captured resume produced again lifts nothing newer;
* only an operator may resume: the mesh's own key issues automatic halts and never lifts one;
* a HALT that was lifted, produced again, is stale: a replay does not re-impose it;
* tombstones and records no control signer signed change nothing.

Every command that changes nothing is reported (:class:`Outcome`), never silently dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "CHAIN_PREFIX",
    "CONTROL_SUBJECT",
    "KILLSWITCH_AGENT",
    "MESH_AGENT_PREFIX",
    "MESH_SIGNER",
    "Action",
    "HaltBook",
    "Outcome",
    "Scope",
    "chain_halt",
    "control_key",
    "control_record",
    "halt_in_force",
    "is_mesh_process",
]

CONTROL_SUBJECT = "mesh.control.ControlCommand"
#: The identity the mesh's own processors sign with (automatic halts, audit checkpoints).
MESH_SIGNER = "mesh"
#: Agent ids the mesh's own processes register under (the kill-switch's liveness); only the
#: mesh's key may register them, and no halt stops them (they are what halts agents).
MESH_AGENT_PREFIX = "mesh."
KILLSWITCH_AGENT = "mesh.killswitch"


def is_mesh_process(agent_id: str) -> bool:
    return agent_id.startswith(MESH_AGENT_PREFIX)


class Action(StrEnum):
    HALT = "HALT"
    RESUME = "RESUME"


class Scope(StrEnum):
    AGENT = "AGENT"
    DEPENDANTS = "DEPENDANTS"
    CAPABILITY = "CAPABILITY"
    FLEET = "FLEET"
    CHAIN = "CHAIN"


CHAIN_PREFIX = "chain:"


def control_key(scope: Scope, target: str) -> str:
    if scope is Scope.FLEET:
        return "*"
    if scope is Scope.CAPABILITY:
        return f"capability:{target}"
    if scope is Scope.CHAIN:
        return f"{CHAIN_PREFIX}{target}"
    return target


def control_record(
    action: Action,
    scope: Scope,
    target: str,
    *,
    rule: str,
    reason: str,
    requested_by: str,
    affected: Iterable[str] = (),
    evidence: Iterable[str] = (),
    trigger_produced_at: int | None = None,
    lifts: str | None = None,
    policy_hash: str | None = None,
) -> dict[str, Any]:
    """A command; a RESUME names the halt it lifts (``lifts``, that halt's command id); an
    automatic HALT carries the hash of the policy that decided it (``policy_hash``)."""
    return {
        "command_id": str(uuid.uuid4()),
        "action": action.value,
        "scope": scope.value,
        "target": "*" if scope is Scope.FLEET else target,
        "affected_agents": list(affected),
        "rule": rule,
        "reason": reason,
        "evidence": list(evidence),
        "requested_by": requested_by,
        "trigger_produced_at": trigger_produced_at,
        "lifts": lifts,
        "policy_hash": policy_hash,
    }


def agent_command(
    action: Action, agent_id: str, *, reason: str, requested_by: str, lifts: str | None = None
) -> dict[str, Any]:
    """An operator's halt or resume of one agent alone (what a drill sends: `mesh gates
    drill` and the scheduled drill of the canary)."""
    return control_record(
        action, Scope.AGENT, agent_id, rule="operator", reason=reason,
        requested_by=requested_by, affected=[agent_id], lifts=lifts,
    )  # fmt: skip


class Outcome(NamedTuple):
    """What one command did: ``changed`` (a halt set or lifted), ``lifted`` (the halt a
    resume lifted), or why it changed nothing (``stale``)."""

    changed: bool
    lifted: dict[str, Any] | None = None
    stale: str | None = None


class HaltBook:
    """The halts in force, by control key, folded from signed control commands in log order."""

    def __init__(self) -> None:
        self.halts: dict[str, dict[str, Any]] = {}
        self.lifted: set[str] = set()  # command ids of halts a resume lifted
        self.stale: list[str] = []  # why each command that changed nothing changed nothing

    def apply(self, key: str, record: Mapping[str, Any] | None, signer: str = "") -> Outcome:
        """Fold one command signed by ``signer`` (a control signer: the caller checked the
        signature). A tombstone (None) changes nothing: it carries no signature."""
        outcome = self._apply(key, record, signer)
        if outcome.stale is not None:
            self.stale.append(f"{key}: {outcome.stale}")
        return outcome

    def _apply(self, key: str, record: Mapping[str, Any] | None, signer: str) -> Outcome:
        if record is None:
            return Outcome(False, stale="a tombstone changes nothing")
        command_id = str(record["command_id"])
        if record["action"] == Action.HALT.value:
            if command_id in self.lifted:
                return Outcome(
                    False, stale=f"halt {command_id} was lifted; a replay changes nothing"
                )
            self.halts[key] = dict(record)
            return Outcome(True)
        return self._resume(key, record, signer)

    def _resume(self, key: str, record: Mapping[str, Any], signer: str) -> Outcome:
        current = self.halts.get(key)
        lifts = record.get("lifts")
        if signer == MESH_SIGNER:
            return Outcome(False, stale="the mesh's key halts but never resumes; an operator must")
        if current is None:
            return Outcome(False, stale=f"resume of {lifts or 'no named halt'}: nothing in force")
        if lifts != current["command_id"]:
            return Outcome(
                False,
                stale=f"resume names halt {lifts!r}, not {current['command_id']!r} in force: "
                "a replayed or out-of-date resume lifts nothing",
            )
        del self.halts[key]
        self.lifted.add(str(lifts))
        return Outcome(True, lifted=current)

    def halt_for(self, agent_id: str, capabilities: Iterable[str] = ()) -> dict[str, Any] | None:
        """The halt that stops ``agent_id`` (None: it may act)."""
        return halt_in_force(self.halts, agent_id, capabilities)


def halt_in_force(
    halts: Mapping[str, Mapping[str, Any]], agent_id: str, capabilities: Iterable[str] = ()
) -> dict[str, Any] | None:
    """Of ``halts`` (by control key), the one that stops ``agent_id`` (None: it may act): the
    fleet's, its own, one of its capabilities', or one that names it among those affected. The
    mesh's own processes are never stopped by a halt."""
    if is_mesh_process(agent_id):
        return None
    for key in ("*", agent_id, *(f"capability:{c}" for c in capabilities)):
        found = halts.get(key)
        if found is not None:
            return dict(found)
    for key, halt in halts.items():
        if agent_id in halt.get("affected_agents", ()) and not key.startswith(CHAIN_PREFIX):
            return dict(halt)
    return None


def chain_halt(
    halts: Mapping[str, Mapping[str, Any]], correlation_id: str | None
) -> dict[str, Any] | None:
    """The halt in force on the chain ``correlation_id`` (None: the chain may go on)."""
    if not correlation_id or not halts:
        return None
    found = halts.get(f"{CHAIN_PREFIX}{correlation_id}")
    return None if found is None else dict(found)
