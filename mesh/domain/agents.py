"""The agent record and its pure transitions. No I/O, no client: ``apply(state, fact) -> state``.

Transitions are idempotent and tolerate reordering, because the log may redeliver and agents'
clocks and partitions interleave:

* a heartbeat never moves ``last_heartbeat`` backwards;
* a card change older than the record's last change is ignored;
* registering again with the same key refreshes the record; with another key it is refused
  until the agent is retired (a takeover would let anyone impersonate the agent);
* HALTED follows the agent's sidecar acknowledging a halt (``HALT_ACK`` telemetry) and ends
  with its ``RESUME_ACK``; heartbeats and re-registration keep it, and a halted agent does not
  go stale (it is halted, whatever else);
* a key rotation replaces the key (who may rotate is checked by the registry processor); an
  operator's revocation QUARANTINES the agent: nothing it signs is accepted, it cannot register
  again, and only a rotation (an operator's) gives it a key and makes it LIVE again. Which key
  the mesh vouches for is :mod:`mesh.domain.keys`; ``key_serial`` and ``key_signature`` are the
  statement that vouches for ``public_key``;
* ``instances`` are the replicas heartbeating now, each with its last heartbeat; one silent
  for the stale period is dropped (:func:`mark_stale`), and a retired agent has none. A halt
  is confirmed per instance (``mesh halt --wait``). An instance that leaves retires the agent
  only if it was the last one running;
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from mesh.domain.telemetry import TELEMETRY_SUBJECT, Kind
from mesh.errors import (
    EventRejectedError,
    RegistrationConflictError,
    RevokedKeyError,
    UnknownSenderError,
)

__all__ = [
    "CERTIFIED_SUBJECT",
    "AgentState",
    "AgentStatus",
    "admitted_halted",
    "apply",
    "live_instances",
    "mark_stale",
    "registered_key",
]


#: An operator's verdict on an agent version (mesh.domain.gates): certified, or refused.
CERTIFIED_SUBJECT = "mesh.registry.AgentCertified"


class AgentStatus(StrEnum):
    LIVE = "LIVE"
    STALE = "STALE"
    HALTED = "HALTED"
    RETIRED = "RETIRED"
    QUARANTINED = "QUARANTINED"


@dataclass(frozen=True, slots=True)
class AgentState:
    agent_id: str
    owner: str
    version: str
    public_key: bytes
    agent_card_json: str
    depends_on_agents: tuple[str, ...] = ()
    depends_on_tools: tuple[str, ...] = ()
    depends_on_topics: tuple[str, ...] = ()
    observed_agents: tuple[str, ...] = ()
    observed_tools: tuple[str, ...] = ()
    status: AgentStatus = AgentStatus.LIVE
    last_heartbeat_ms: int | None = None
    certifications: tuple[str, ...] = ()
    updated_at_ms: int = 0
    key_serial: int = 0
    key_signature: bytes = b""
    instances: tuple[tuple[str, int], ...] = ()  # (instance id, last heartbeat ms), sorted
    environment: str = "staging"  # or "production" (mesh.domain.gates)
    rollback_note: str = ""  # the owner's plan to go back, declared at registration
    certified_until_ms: int | None = None  # when the current certification lapses
    certified_by: str = ""
    certified_versions: tuple[str, ...] = ()  # every version ever certified (rollback targets)
    gates_failing: tuple[str, ...] = ()  # required gates the last refused certification named


def apply(state: AgentState | None, subject: str, body: dict[str, Any], at_ms: int) -> AgentState:
    """The record after one fact. Raise EventRejectedError for a fact that cannot apply."""
    if subject == "mesh.registry.AgentRegistered":
        return _registered(state, body, at_ms)
    handler = _HANDLERS.get(subject)
    if handler is None:
        raise EventRejectedError(f"the registry does not take {subject} events")
    if state is None:
        raise EventRejectedError(
            f"{subject} for agent {body.get('agent_id')!r}, which is not registered; "
            "register the agent first"
        )
    return handler(state, body, at_ms)


def mark_stale(state: AgentState, now_ms: int, stale_after_ms: int) -> AgentState | None:
    """The record once heartbeats stopped more than ``stale_after_ms`` ago (STALE) or some
    instances fell silent (dropped), else None (nothing changed)."""
    alive = tuple(i for i in state.instances if now_ms - i[1] <= stale_after_ms)
    changed = replace(state, instances=alive) if alive != state.instances else state
    if state.status is AgentStatus.LIVE:
        last = state.last_heartbeat_ms or state.updated_at_ms
        if now_ms - last > stale_after_ms:
            changed = replace(changed, status=AgentStatus.STALE, updated_at_ms=now_ms)
    return None if changed is state else changed


def live_instances(state: AgentState) -> tuple[str, ...]:
    """The replicas of a running agent (empty when it reported none: an older sidecar)."""
    return tuple(instance for instance, _ in state.instances)


def admitted_halted(state: AgentState) -> AgentState:
    """The record of an agent that registers while a halt covers it: HALTED from the start
    (its sidecar will acknowledge the halt; only a resume's acknowledgement makes it LIVE)."""
    if state.status is not AgentStatus.LIVE:
        return state
    return replace(state, status=AgentStatus.HALTED)


def registered_key(agents: Mapping[str, AgentState], agent_id: str) -> bytes:
    """The public key ``agent_id`` registered; raise UnknownSenderError if it has none (never
    registered, or retired)."""
    agent = agents.get(agent_id)
    if agent is None or agent.status is AgentStatus.RETIRED:
        raise UnknownSenderError(
            f"sender {agent_id!r} is not a registered (and unretired) agent; it must register "
            "(attach through a sidecar) before it sends"
        )
    if agent.status is AgentStatus.QUARANTINED:
        raise RevokedKeyError(
            f"the key of {agent_id!r} was revoked; the agent is quarantined until an operator "
            "rotates its key"
        )
    return agent.public_key


def _registered(state: AgentState | None, body: dict[str, Any], at_ms: int) -> AgentState:
    key = bytes(body["public_key"])
    if state is not None and state.status is AgentStatus.QUARANTINED:
        raise RegistrationConflictError(
            f"agent {body['agent_id']!r} is quarantined (its key was revoked); an operator must "
            "rotate its key (mesh keys rotate) before it registers again"
        )
    if state is not None and state.status is not AgentStatus.RETIRED and state.public_key != key:
        raise RegistrationConflictError(
            f"agent {body['agent_id']!r} is already registered with another public key; "
            "retire it first (mesh.registry.AgentRetired signed with the old key) or register "
            "under a new id"
        )
    fresh = AgentState(
        agent_id=body["agent_id"],
        owner=body["owner"],
        version=body["version"],
        public_key=key,
        agent_card_json=body["agent_card_json"],
        depends_on_agents=tuple(body.get("depends_on_agents", ())),
        depends_on_tools=tuple(body.get("depends_on_tools", ())),
        depends_on_topics=tuple(body.get("depends_on_topics", ())),
        last_heartbeat_ms=at_ms,
        updated_at_ms=at_ms,
        environment=body.get("environment") or "staging",
        rollback_note=body.get("rollback_note") or "",
    )
    if state is None or state.public_key != key:
        return fresh
    # The same agent again (a restart): keep what was learnt about it, never go back in time,
    # and stay halted if it was halted (only a resume lifts a halt). A certification holds
    # for the version certified only: another version starts uncertified.
    same = state.version == fresh.version
    return replace(
        fresh,
        observed_agents=state.observed_agents,
        observed_tools=state.observed_tools,
        status=AgentStatus.HALTED if state.status is AgentStatus.HALTED else AgentStatus.LIVE,
        last_heartbeat_ms=max(at_ms, state.last_heartbeat_ms or 0),
        certifications=state.certifications if same else (),
        certified_until_ms=state.certified_until_ms if same else None,
        certified_by=state.certified_by if same else "",
        gates_failing=state.gates_failing if same else (),
        certified_versions=state.certified_versions,
        updated_at_ms=max(at_ms, state.updated_at_ms),
        key_serial=state.key_serial,
        key_signature=state.key_signature,
        instances=state.instances,
    )


def _heartbeat(state: AgentState, body: dict[str, Any], at_ms: int) -> AgentState:
    if state.status is AgentStatus.RETIRED:
        raise EventRejectedError(f"heartbeat from retired agent {state.agent_id!r}; re-register it")
    last = max(at_ms, state.last_heartbeat_ms or 0)
    status = AgentStatus.LIVE if state.status is AgentStatus.STALE else state.status
    instances = _seen(state.instances, str(body.get("instance_id") or ""), at_ms)
    if (last, status, instances) == (state.last_heartbeat_ms, state.status, state.instances):
        return state
    return replace(
        state,
        last_heartbeat_ms=last,
        status=status,
        instances=instances,
        updated_at_ms=max(at_ms, state.updated_at_ms),
    )


def _seen(
    instances: tuple[tuple[str, int], ...], instance: str, at_ms: int
) -> tuple[tuple[str, int], ...]:
    if not instance:
        return instances
    known = dict(instances)
    known[instance] = max(at_ms, known.get(instance, at_ms))
    return tuple(sorted(known.items()))


def _capabilities(state: AgentState, body: dict[str, Any], at_ms: int) -> AgentState:
    if at_ms < state.updated_at_ms:
        return state  # an older card arriving late
    return replace(state, agent_card_json=body["agent_card_json"], updated_at_ms=at_ms)


def _certified(state: AgentState, body: dict[str, Any], at_ms: int) -> AgentState:
    """An operator's certification of the current version for a level (``granted``), or its
    refusal: the gates that failed are kept, and a certification for that level is withdrawn
    (the evidence now says a gate fails). One for another version changes nothing."""
    if body["agent_version"] != state.version:
        return state
    level = body["level"]
    others = tuple(c for c in state.certifications if c != level)
    when = max(at_ms, state.updated_at_ms)
    if not body.get("granted", True):
        failing = tuple(
            g["gate"] for g in json.loads(body.get("gates_json") or "[]")
            if g.get("required", True) and not g.get("passed")
        )  # fmt: skip
        return replace(state, certifications=others, gates_failing=failing, updated_at_ms=when)
    versions = state.certified_versions
    return replace(
        state,
        certifications=(*others, level),
        certified_until_ms=body.get("expires_at"),
        certified_by=body["certified_by"],
        certified_versions=versions if state.version in versions else (*versions, state.version),
        gates_failing=(),
        updated_at_ms=when,
    )


def _retired(state: AgentState, body: dict[str, Any], at_ms: int) -> AgentState:
    if state.status is AgentStatus.RETIRED:
        return state
    leaving = body.get("instance_id")
    others = tuple(i for i in state.instances if i[0] != leaving)
    if leaving and others:  # one replica left; the agent runs on in the others
        return replace(state, instances=others, updated_at_ms=max(at_ms, state.updated_at_ms))
    return replace(
        state,
        status=AgentStatus.RETIRED,
        instances=(),
        updated_at_ms=max(at_ms, state.updated_at_ms),
    )


def _telemetry(state: AgentState, body: dict[str, Any], at_ms: int) -> AgentState:
    kind, name, peer = body.get("kind"), body.get("name"), body.get("peer")
    if kind in _ACK_STATUS:
        return _acknowledged(state, _ACK_STATUS[kind], at_ms)
    if kind == Kind.TOOL_CALL and name and name not in state.observed_tools:
        return replace(state, observed_tools=(*state.observed_tools, name))
    if kind == Kind.MESSAGE_SENT and peer and peer not in state.observed_agents:
        return replace(state, observed_agents=(*state.observed_agents, peer))
    return state


#: The sidecar acknowledges on telemetry each halt it applies and each resume. The registry
#: takes HALTED from those acknowledgements rather than from the control topic: whatever the
#: halt's scope (the agent, its dependants, a capability, the fleet), the agent is shown halted
#: once its own sidecar refuses to act, and for as long as it does.
_ACK_STATUS = {Kind.HALT_ACK: AgentStatus.HALTED, Kind.RESUME_ACK: AgentStatus.LIVE}


def _rotated(state: AgentState, body: dict[str, Any], at_ms: int) -> AgentState:
    if state.status is AgentStatus.RETIRED:
        raise EventRejectedError(
            f"key rotation for retired agent {state.agent_id!r}; register it with the new key"
        )
    key = bytes(body["new_public_key"])
    if key == state.public_key:
        return state
    status = AgentStatus.LIVE if state.status is AgentStatus.QUARANTINED else state.status
    return replace(
        state, public_key=key, status=status, updated_at_ms=max(at_ms, state.updated_at_ms)
    )


def _revoked(state: AgentState, body: dict[str, Any], at_ms: int) -> AgentState:
    if bytes(body["public_key"]) != state.public_key:
        if state.status is AgentStatus.QUARANTINED:
            return state
        raise EventRejectedError(
            f"revocation of a key {state.agent_id!r} does not hold (it was rotated since); "
            "nothing to revoke"
        )
    if state.status is AgentStatus.QUARANTINED:
        return state
    return replace(
        state, status=AgentStatus.QUARANTINED, updated_at_ms=max(at_ms, state.updated_at_ms)
    )


def _acknowledged(state: AgentState, status: AgentStatus, at_ms: int) -> AgentState:
    if state.status in (AgentStatus.RETIRED, AgentStatus.QUARANTINED) or state.status is status:
        return state
    if status is AgentStatus.LIVE and state.status is not AgentStatus.HALTED:
        return state  # a resume of a stale agent says nothing about its heartbeats
    return replace(state, status=status, updated_at_ms=max(at_ms, state.updated_at_ms))


_HANDLERS = {
    "mesh.registry.Heartbeat": _heartbeat,
    "mesh.registry.CapabilitiesChanged": _capabilities,
    CERTIFIED_SUBJECT: _certified,
    "mesh.registry.AgentRetired": _retired,
    "mesh.registry.KeyRotated": _rotated,
    "mesh.registry.KeyRevoked": _revoked,
    TELEMETRY_SUBJECT: _telemetry,
}
