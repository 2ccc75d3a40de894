"""The registry processor: ``mesh.registry.events.v1`` + telemetry -> ``mesh.registry.v1``.

Who may say what (checked before anything is applied, refusals go to the dead-letter topic):

* ``AgentRegistered`` must be signed by the key it registers (proof of possession), and its
  sender must be the agent it registers;
* heartbeats, card changes, retirement and telemetry must be signed by the agent's registered
  key;
* ``AgentCertified`` must be signed by an operator key given to the processor.

The record key must be the agent id: the topic is partitioned by it, and the agent's state
lives on that partition.

An agent that registers while a halt covers it (the fleet's, its capability's, its own) is
admitted HALTED: the halts in force are a global table the runtime keeps (``ctx.halts``), so
the registry never shows a halted newcomer as running, even before (or without) its sidecar's
acknowledgement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.domain.agent_record import from_record, to_record
from mesh.domain.agents import AgentState, admitted_halted, apply, mark_stale
from mesh.domain.dependencies import capabilities
from mesh.domain.topics import REGISTRY, REGISTRY_EVENTS, TELEMETRY
from mesh.errors import EventRejectedError, IdentityError, UnknownSenderError
from processors.api import Context, Event, PunctuationContext, Restore

__all__ = ["RegistryProcessor"]

CERTIFIED = "mesh.registry.AgentCertified"
REGISTERED = "mesh.registry.AgentRegistered"


class RegistryProcessor:
    name = "registry"
    inputs: tuple[str, ...] = (REGISTRY_EVENTS, TELEMETRY)
    input_patterns: tuple[str, ...] = ()
    store_topic = REGISTRY
    global_tables: tuple[str, ...] = ("halts",)
    restore = Restore.TABLE
    copartitioned: tuple[str, ...] = ()
    store_subject = "mesh.registry.AgentRecord"

    def __init__(
        self,
        stale_after_ms: int = 15_000,
        operator_keys: Mapping[str, bytes] | None = None,
        punctuate_every_ms: int = 1_000,
    ) -> None:
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
        self._authenticate(event, agent_id, state)
        new = apply(state, event.subject, event.body, event.envelope.created_at_ms)
        if event.subject == REGISTERED and ctx.halts.halt_for(agent_id, capabilities(new)):
            new = admitted_halted(new)  # registering while halted: halted from the start
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
        return from_record(record)

    def _authenticate(self, event: Event, agent_id: str, state: AgentState | None) -> None:
        sender = event.envelope.sender
        if event.subject == CERTIFIED:
            if sender not in self.operator_keys:
                raise UnknownSenderError(
                    f"certification signed by {sender!r}, which is not an operator key of this "
                    "registry; sign certifications with an operator key"
                )
            event.message.verify(self.operator_keys[sender])
            return
        if sender != agent_id:
            raise IdentityError(f"{sender!r} may not send {event.subject} for agent {agent_id!r}")
        if event.subject == REGISTERED:
            event.message.verify(bytes(event.body["public_key"]))
        elif state is None:
            raise UnknownSenderError(
                f"no public key is registered for {agent_id!r}; it must register before "
                f"sending {event.subject}"
            )
        else:
            event.message.verify(state.public_key)
