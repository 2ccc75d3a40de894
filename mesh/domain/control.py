"""Halt and resume commands: their record, their key on ``mesh.control.v1``, and the book of
halts in force (pure). The kill-switch, the ``mesh halt``/``mesh resume`` commands and the
sidecar all read halts through :class:`HaltBook`, so they agree on who is halted.

Keys (the topic is compacted, so the latest command per key is what stays in force):
one agent or an agent and its dependants -> the agent id; a capability -> ``capability:NAME``;
the fleet -> ``*``. A resume lifts the halt with the same key, and only that one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

__all__ = [
    "CONTROL_SUBJECT",
    "Action",
    "HaltBook",
    "Scope",
    "control_key",
    "control_record",
    "halt_in_force",
]

CONTROL_SUBJECT = "mesh.control.ControlCommand"


class Action(StrEnum):
    HALT = "HALT"
    RESUME = "RESUME"


class Scope(StrEnum):
    AGENT = "AGENT"
    DEPENDANTS = "DEPENDANTS"
    CAPABILITY = "CAPABILITY"
    FLEET = "FLEET"


def control_key(scope: Scope, target: str) -> str:
    if scope is Scope.FLEET:
        return "*"
    if scope is Scope.CAPABILITY:
        return f"capability:{target}"
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
) -> dict[str, Any]:
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
    }


class HaltBook:
    """The halts in force, by control key, folded from control commands in log order."""

    def __init__(self) -> None:
        self.halts: dict[str, dict[str, Any]] = {}

    def apply(self, key: str, record: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Fold one command; returns the halt a resume lifted, if any.

        A tombstone (None) changes nothing: it carries no signature, so it cannot speak for a
        control signer, and the mesh never writes one (a halt ends with a signed resume).
        """
        if record is None:
            return None
        if record["action"] == Action.RESUME.value:
            return self.halts.pop(key, None)
        self.halts[key] = dict(record)
        return None

    def halt_for(self, agent_id: str, capabilities: Iterable[str] = ()) -> dict[str, Any] | None:
        """The halt that stops ``agent_id`` (None: it may act)."""
        return halt_in_force(self.halts, agent_id, capabilities)


def halt_in_force(
    halts: Mapping[str, Mapping[str, Any]], agent_id: str, capabilities: Iterable[str] = ()
) -> dict[str, Any] | None:
    """Of ``halts`` (by control key), the one that stops ``agent_id`` (None: it may act): the
    fleet's, its own, one of its capabilities', or one that names it among those affected."""
    for key in ("*", agent_id, *(f"capability:{c}" for c in capabilities)):
        found = halts.get(key)
        if found is not None:
            return dict(found)
    for halt in halts.values():
        if agent_id in halt.get("affected_agents", ()):
            return dict(halt)
    return None
