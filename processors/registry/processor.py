"""The registry processor: ``mesh.registry.events.v1`` + telemetry -> ``mesh.registry.v1``.

Who may say what (checked before anything is applied, refusals go to the dead-letter topic):

* ``AgentRegistered`` must be signed by the key it registers (proof of possession), and its
  sender must be the agent it registers;
* heartbeats, card changes, retirement and telemetry must be signed by the agent's registered
  key;
* ``AgentCertified`` and ``KeyRevoked`` must be signed by an operator key given to the
  processor;
* ``KeyRotated`` must be signed by the agent's current key, or by an operator (the way back for
  a quarantined agent), and carry the new key's proof of possession;
* nothing signed by a quarantined agent (its key revoked) is accepted.

The registry vouches for keys: whenever an agent's key or its standing changes (registered,
rotated, retired, revoked), it appends a :class:`~mesh.domain.keys.KeyStatement` signed with
the mesh's key to ``mesh.keys.v1``, in the same transaction, and every reader takes agent keys
only from there (docs/security/keys.md). The key it checks an agent's events with is the
directory's (a global table) whenever the directory is as new as its own record, so a record
forged or replayed onto its changelog cannot change which key it accepts; a changelog record
whose countersignature does not hold is not restored at all.

The record key must be the agent id: the topic is partitioned by it, and the agent's state
lives on that partition.

An agent that registers while a halt covers it (the fleet's, its capability's, its own) is
admitted HALTED: the halts in force are a global table the runtime keeps (``ctx.halts``), so
the registry never shows a halted newcomer as running, even before (or without) its sidecar's
acknowledgement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mesh.domain.agent_record import from_record, to_record
from mesh.domain.agents import (
    CERTIFIED_SUBJECT,
    AgentState,
    AgentStatus,
    admitted_halted,
    apply,
    mark_stale,
)
from mesh.domain.control import MESH_AGENT_PREFIX, is_mesh_process
from mesh.domain.dependencies import capabilities
from mesh.domain.identity import AgentKey, verify_signature
from mesh.domain.keys import (
    KEY_STATEMENT_SUBJECT,
    KeyStatement,
    KeyStatus,
    countersign,
    rotation_bytes,
    statement_bytes,
)
from mesh.domain.topics import KEYS, REGISTRY, REGISTRY_EVENTS, TELEMETRY
from mesh.errors import (
    BadSignatureError,
    EventRejectedError,
    IdentityError,
    RevokedKeyError,
    UnknownSenderError,
)
from processors.api import Agents, Context, Event, PunctuationContext, Restore

__all__ = ["RegistryProcessor"]

CERTIFIED = CERTIFIED_SUBJECT
REGISTERED = "mesh.registry.AgentRegistered"
ROTATED = "mesh.registry.KeyRotated"
REVOKED = "mesh.registry.KeyRevoked"
#: Signed by an operator, not by the agent.
_OPERATOR_SUBJECTS = (CERTIFIED, REVOKED)


class RegistryProcessor:
    name = "registry"
    inputs: tuple[str, ...] = (REGISTRY_EVENTS, TELEMETRY)
    input_patterns: tuple[str, ...] = ()
    store_topic = REGISTRY
    global_tables: tuple[str, ...] = ("halts", "keys")
    restore = Restore.TABLE
    copartitioned: tuple[str, ...] = ()
    store_subject = "mesh.registry.AgentRecord"

    def __init__(
        self,
        mesh: AgentKey,
        stale_after_ms: int = 15_000,
        operator_keys: Mapping[str, bytes] | None = None,
        punctuate_every_ms: int = 1_000,
    ) -> None:
        self.mesh = mesh
        self.stale_after_ms = stale_after_ms
        self.operator_keys = dict(operator_keys or {})
        self.punctuate_every_ms: int | None = punctuate_every_ms

    def init(self) -> None:
        return None

    def close(self) -> None:
        return None

    def process(self, event: Event, ctx: Context[AgentState]) -> None:
        agent_id = str(event.body.get("agent_id", ""))
        if event.key != agent_id:
            raise EventRejectedError(
                f"{event.subject} about agent {agent_id!r} was keyed {event.key!r}; key "
                "registry events and telemetry by the agent id"
            )
        state = ctx.get(agent_id)
        self._authenticate(event, agent_id, state, ctx.agents)
        at_ms = event.envelope.created_at_ms
        new = apply(state, event.subject, event.body, at_ms)
        if event.subject == REGISTERED and ctx.halts.halt_for(agent_id, capabilities(new)):
            new = admitted_halted(new)  # registering while halted: halted from the start
        new = self._vouch(state, new, event, ctx, at_ms)
        if new != state:
            ctx.put(agent_id, new)

    def punctuate(self, ctx: PunctuationContext[AgentState]) -> None:
        for agent_id, state in ctx.items():
            stale = mark_stale(state, ctx.now_ms, self.stale_after_ms)
            if stale is not None:
                ctx.put(agent_id, stale)

    def encode_state(self, state: AgentState) -> dict[str, Any]:
        return to_record(state)

    def decode_state(self, record: dict[str, Any]) -> AgentState:
        """A changelog record, restored only if the mesh countersigned its key (a record from
        before key statements, serial 0, vouches for nothing; see :meth:`_vouch`)."""
        state = from_record(record)
        if state.key_serial > 0:
            statement = _statement(state, "", 0)
            try:
                verify_signature(
                    self.mesh.public_bytes, state.key_signature, statement_bytes(statement), "mesh"
                )
            except BadSignatureError:
                raise IdentityError(
                    f"the registry record of {state.agent_id!r} carries a key the mesh did not "
                    "countersign (forged onto the changelog); not restored"
                ) from None
        return state

    # -- vouching --------------------------------------------------------------------------

    def _vouch(
        self,
        before: AgentState | None,
        after: AgentState,
        event: Event,
        ctx: Context[AgentState],
        at_ms: int,
    ) -> AgentState:
        """Append a countersigned key statement when the key or its standing changed (or the
        agent proved a key the mesh has not vouched for yet, by registering)."""
        unvouched = after.key_serial == 0 and event.subject in (REGISTERED, ROTATED)
        changed = before is None or (
            before.public_key != after.public_key or _standing(before) != _standing(after)
        )
        if not (changed or unvouched):
            return after
        in_force = ctx.agents.vouched(after.agent_id)
        serial = max(after.key_serial, in_force.serial if in_force else 0) + 1
        statement = countersign(_statement(after, _why(event), at_ms, serial), self.mesh)
        ctx.emit(KEYS, after.agent_id, KEY_STATEMENT_SUBJECT, statement.to_record())
        return replace(after, key_serial=serial, key_signature=statement.signature)

    # -- who may say what ------------------------------------------------------------------

    def _authenticate(
        self, event: Event, agent_id: str, state: AgentState | None, agents: Agents
    ) -> None:
        sender = event.envelope.sender
        if event.subject in _OPERATOR_SUBJECTS or (
            event.subject == ROTATED and sender in self.operator_keys
        ):
            self._by_operator(event, sender)
        else:
            if sender != agent_id:
                raise IdentityError(
                    f"{sender!r} may not send {event.subject} for agent {agent_id!r}"
                )
            if _quarantined(agent_id, state, agents):
                raise RevokedKeyError(
                    f"{event.subject} from {agent_id!r}, whose key was revoked: the agent is "
                    "quarantined until an operator rotates its key"
                )
            if event.subject == REGISTERED:
                key = bytes(event.body["public_key"])
                if is_mesh_process(agent_id) and key != self.mesh.public_bytes:
                    raise IdentityError(
                        f"agent ids beginning {MESH_AGENT_PREFIX!r} are the mesh's own processes; "
                        f"{agent_id!r} registers only with the mesh's key"
                    )
                event.message.verify(key)
            elif state is None:
                raise UnknownSenderError(
                    f"no public key is registered for {agent_id!r}; it must register before "
                    f"sending {event.subject}"
                )
            else:
                event.message.verify(_current_key(state, agents))
        if event.subject == ROTATED:
            new_key = bytes(event.body["new_public_key"])
            verify_signature(
                new_key, bytes(event.body["proof"]), rotation_bytes(agent_id, new_key), agent_id
            )

    def _by_operator(self, event: Event, sender: str) -> None:
        if sender not in self.operator_keys:
            raise UnknownSenderError(
                f"{event.subject} signed by {sender!r}, which is not an operator key of this "
                "registry; sign it with an operator key"
            )
        event.message.verify(self.operator_keys[sender])


def _quarantined(agent_id: str, state: AgentState | None, agents: Agents) -> bool:
    """Quarantined by the record, or by a revocation in the directory newer than the record."""
    if state is not None and state.status is AgentStatus.QUARANTINED:
        return True
    vouched = agents.vouched(agent_id)
    serial = 0 if state is None else state.key_serial
    return vouched is not None and vouched.status is KeyStatus.REVOKED and vouched.serial >= serial


def _current_key(state: AgentState, agents: Agents) -> bytes:
    """The key to check the agent's events with: the directory's when it is at least as new as
    the record (a record forged or replayed onto the changelog changes nothing), else the
    record's (a registration in this very transaction, not yet in the directory)."""
    vouched = agents.vouched(state.agent_id)
    if vouched is not None and vouched.serial >= state.key_serial:
        return vouched.public_key
    return state.public_key


def _standing(state: AgentState) -> KeyStatus:
    if state.status is AgentStatus.QUARANTINED:
        return KeyStatus.REVOKED
    if state.status is AgentStatus.RETIRED:
        return KeyStatus.RETIRED
    return KeyStatus.ACTIVE


def _statement(
    state: AgentState, reason: str, at_ms: int, serial: int | None = None
) -> KeyStatement:
    return KeyStatement(
        state.agent_id,
        state.public_key,
        state.key_serial if serial is None else serial,
        _standing(state),
        reason,
        at_ms,
    )


def _why(event: Event) -> str:
    reason = str(event.body.get("reason") or "")
    what = event.subject.rsplit(".", 1)[-1]
    return f"{what}: {reason}" if reason else what
