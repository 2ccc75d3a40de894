"""The kill-switch processor: ``mesh.telemetry.v1`` (+ ``mesh.control.v2``) -> halts.

Per telemetry event: verify it against the sender's registered key (``ctx.agents``: forged
telemetry must not halt anyone), check the sender reports about itself, and feed the sliding
windows (:mod:`processors.killswitch.watch`). A rule that fires publishes one HALT to
``mesh.control.v2`` in the same transaction as the consumer offsets, signed by the mesh's key;
its reach (dependants, a capability, the fleet) comes from the registry table the runtime
keeps current between batches, so the halt path reads nothing from Kafka.

State: the halts in force, a :class:`~mesh.domain.control.HaltBook` folded exactly as
sidecars fold it (ordered control: a resume lifts only the halt it names, and only an
operator's), restored ``SOURCE``: the control topic is an input and its own changelog,
replayed through :meth:`process` on every assignment. Only commands signed by a control signer
count; anything else on the control topic is dead-lettered with the reason when first
consumed (and ignored on replay), as sidecars ignore it; a signed command that changes nothing
(a replayed resume) is dead-lettered too, so it is on the record.

Flapping: while an agent (or the fleet) is halted, no rule fires for it again; a halt issued
counts as in force until it comes back on the control topic. A resume, by an operator, starts
fresh windows.

Scaling: per-agent rules partition with telemetry (keyed by agent id). Fleet rules have a
second stage: each instance forwards every spend and error it observes as a ``FleetFact`` under
the key ``*`` to ``mesh.killswitch.fleet.v1`` (in the same transaction), and the one instance
that owns that key's partition keeps the fleet's windows and issues fleet halts. The fleet halt
lives under ``*`` on the control topic, on the same partition number, so that instance also
holds it: fleet rules are exact, and fire once, with any number of instances.

Chains: a chain of messages spreads its spend over agents, so per-agent windows cannot bound
it. Every record of a chain (telemetry that names a cause: messages, permits, tool, model and
error reports) is forwarded the same way under ``chain:CORRELATION``; the instance owning that
key's partition keeps the chain's windows (:mod:`processors.killswitch.chains`) and halts the
chain alone (``Scope.CHAIN``, under the same key on the control topic) when a ``[chain]``
limit is crossed. Sidecars refuse every further send, permit and delivery of that chain; the
agents go on serving other chains.

Rates: every action of a kind the policy rate-limits (``[rates]``) is forwarded under
``rate:KIND``; its owner counts the fleet's rate, publishes a ``Throttle`` on
``mesh.throttles.v1`` (signed with the mesh's key) when a limit is crossed, which sidecars obey
by refusing that kind for a while, and halts the fleet if the rate keeps climbing
(:mod:`processors.killswitch.rates`).

Windows survive a restart: the kill-switch declares ``replay_lookback_ms`` (an hour of
telemetry, its longest window), and on every assignment the runtime replays that hour of its
partitions up to the committed offsets, merged in time order with the control topic, through
:meth:`process`, outputs discarded. The windows come back as they were, and a rule that fired
then finds its halt, replayed from the control topic, already in force. Halts a replay would
issue anew are forgotten (:meth:`restored`): they were never published.

Liveness: every two seconds the kill-switch heartbeats on ``mesh.registry.events.v1`` as the
agent ``mesh.killswitch`` (registered once per start, signed with a key derived from the mesh's
seed; the registry lets only the mesh's key register ``mesh.`` ids), one instance per
kill-switch instance. `mesh agents ls` shows it LIVE or STALE, and a sidecar whose policy says
``require_killswitch_s`` refuses spend-bearing calls while its last heartbeat is older than
that (fail closed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mesh.adapters.serde.control import check_control, seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import (
    CHAIN_PREFIX,
    CONTROL_SUBJECT,
    KILLSWITCH_AGENT,
    MESH_SIGNER,
    Action,
    HaltBook,
    Scope,
    control_key,
    control_record,
    halt_in_force,
    is_mesh_process,
)
from mesh.domain.dependencies import capabilities, dependants, with_capability
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.identity import AgentKey
from mesh.domain.telemetry import TELEMETRY_SUBJECT, THROTTLE_SUBJECT
from mesh.domain.topics import CONTROL, FLEET_FACTS, REGISTRY_EVENTS, TELEMETRY, THROTTLES
from mesh.errors import EventRejectedError
from processors.api import Agents, Context, Event, PunctuationContext, Restore
from processors.killswitch.chains import ChainObservation, ChainWatch
from processors.killswitch.policy import Policy
from processors.killswitch.rates import RateWatch, Throttle
from processors.killswitch.watch import Firing, Observation, Watch

__all__ = ["KillSwitchProcessor"]

Halt = dict[str, Any]
_SCOPES = {
    "agent": Scope.AGENT,
    "dependants": Scope.DEPENDANTS,
    "capability": Scope.CAPABILITY,
    "fleet": Scope.FLEET,
    "chain": Scope.CHAIN,
}


class KillSwitchProcessor:
    name = "killswitch"
    inputs: tuple[str, ...] = (TELEMETRY, CONTROL, FLEET_FACTS)
    input_patterns: tuple[str, ...] = ()
    store_topic = CONTROL
    store_subject = CONTROL_SUBJECT
    restore = Restore.SOURCE
    copartitioned: tuple[str, ...] = ()
    global_tables: tuple[str, ...] = ("agents",)
    punctuate_every_ms: int | None = 2_000
    #: The longest window (spend per hour): replayed on restore, so windows survive a restart.
    replay_lookback_ms: dict[str, int] = {TELEMETRY: 3_600_000, FLEET_FACTS: 3_600_000}  # noqa: RUF012

    def __init__(
        self,
        codec: MessageCodec,
        key: AgentKey,
        policy: Policy,
        signers: Mapping[str, bytes],
        instance: str = "0",
    ) -> None:
        """``signers``: who may sign halts and resumes; control records signed by anyone else
        are dead-lettered and change nothing."""
        self.codec, self.key, self.policy = codec, key, policy
        self.policy_hash = policy.digest  # stamped on every halt this policy decides
        self.signers = dict(signers)
        self.requested_by = f"killswitch:{instance}"
        self.identity = AgentKey.from_seed(KILLSWITCH_AGENT, key.seed())
        self.instance_id = f"killswitch-{instance}"
        self.beats = 0
        self.watch = Watch(policy)
        self.chains = ChainWatch(policy.chain)
        self.rates = RateWatch(policy.rates)
        self.book = HaltBook()
        self.issued: dict[str, Halt] = {}  # halts sent, not yet seen back on the control topic
        self.halts_issued = 0
        self.throttles_issued = 0

    def init(self) -> None:
        self.beats = 0
        self.watch = Watch(self.policy)
        self.chains = ChainWatch(self.policy.chain)
        self.rates = RateWatch(self.policy.rates)
        self.book = HaltBook()
        self.issued.clear()

    def close(self) -> None:
        return None

    def restored(self) -> None:
        """After a replay: a halt the replay issued was never published (outputs are discarded
        on replay), so it must not count as in flight."""
        self.issued.clear()

    def process(self, event: Event, ctx: Context[Halt]) -> None:
        if event.topic == CONTROL:
            self._control(event, ctx)
        elif event.topic == FLEET_FACTS:
            self._fleet_fact(event, ctx)
        else:
            self._telemetry(event, ctx)

    def punctuate(self, ctx: PunctuationContext[Halt]) -> None:
        """Heartbeat as ``mesh.killswitch`` (registering first, once per start)."""
        if self.beats == 0:
            self._registry_event(ctx, REGISTERED, registration(self.identity))
        self.beats += 1
        beat = {
            "agent_id": KILLSWITCH_AGENT,
            "instance_id": self.instance_id,
            "sequence": self.beats,
        }
        self._registry_event(ctx, HEARTBEAT, beat)

    def _registry_event(
        self, ctx: PunctuationContext[Halt], subject: str, body: dict[str, Any]
    ) -> None:
        envelope = new_envelope(KILLSWITCH_AGENT, "", recipient_kind=RecipientKind.BROADCAST)
        value = self.codec.seal(envelope, subject, body, self.identity)
        ctx.emit_raw(REGISTRY_EVENTS, KILLSWITCH_AGENT, value)

    def encode_state(self, state: Halt) -> dict[str, Any]:
        return state

    def decode_state(self, record: dict[str, Any]) -> Halt:
        return record

    # -- telemetry -------------------------------------------------------------------------

    def _telemetry(self, event: Event, ctx: Context[Halt]) -> None:
        envelope, body = event.envelope, event.body
        if event.subject != TELEMETRY_SUBJECT:
            raise EventRejectedError(
                f"{TELEMETRY} carries {TELEMETRY_SUBJECT}, not {event.subject}"
            )
        event.message.verify(ctx.agents.public_key(envelope.sender))
        if body["agent_id"] != envelope.sender:
            raise EventRejectedError(
                f"telemetry about {body['agent_id']!r} was signed by {envelope.sender!r}; an "
                "agent reports only about itself"
            )
        observation = Observation(
            event_id=envelope.message_id,
            agent_id=envelope.sender,
            at_ms=event.timestamp_ms,
            kind=body["kind"],
            name=body["name"],
            cost_usd=body["cost_usd"],
            ok=body["ok"],
            peer=body["peer"],
            arguments_digest=body["arguments_digest"],
            hop_count=envelope.hop_count,
            correlation_id=envelope.correlation_id,
            rule=body.get("rule"),
        )
        if self._halted(observation.agent_id):
            return
        firing = self.watch.observe_agent(observation)
        if firing is not None and not self._halted(firing.agent_id):
            self._halt(ctx, firing, event.timestamp_ms)
        self._forward(ctx, observation, envelope, body)

    def _forward(
        self, ctx: Context[Halt], obs: Observation, envelope: Any, body: Mapping[str, Any]
    ) -> None:
        """To the second stage: spend and errors under '*' (the fleet's windows), and every
        record of a chain under 'chain:ID' (that chain's windows)."""
        error = obs.kind == "ERROR" or not obs.ok
        fact: dict[str, Any] = {
            "event_id": obs.event_id,
            "agent_id": obs.agent_id,
            "at": obs.at_ms,
            "cost_usd": obs.cost_usd,
            "error": error,
        }
        if obs.cost_usd or error:
            ctx.emit(FLEET_FACTS, FLEET_KEY, FLEET_FACT_SUBJECT, fact)
        if self.rates.rated(obs.kind):
            rated = fact | {"kind": obs.kind}
            ctx.emit(FLEET_FACTS, f"{RATE_PREFIX}{obs.kind}", FLEET_FACT_SUBJECT, rated)
        if envelope.causation_id is not None:  # a record of a chain
            tokens = int(body.get("input_tokens") or 0) + int(body.get("output_tokens") or 0)
            chained = fact | {
                "correlation_id": envelope.correlation_id,
                "kind": obs.kind,
                "hop_count": envelope.hop_count,
                "tokens": tokens,
            }
            chain_key = control_key(Scope.CHAIN, envelope.correlation_id)
            ctx.emit(FLEET_FACTS, chain_key, FLEET_FACT_SUBJECT, chained)

    # -- the fleet (second stage) ----------------------------------------------------------

    def _fleet_fact(self, event: Event, ctx: Context[Halt]) -> None:
        fact = self.codec.serde.decode(event.value or b"").record
        if event.key is not None and event.key.startswith(CHAIN_PREFIX):
            self._chain_fact(event.key, fact, event, ctx)
            return
        if event.key is not None and event.key.startswith(RATE_PREFIX):
            self._rate_fact(fact, event, ctx)
            return
        if self._halted(FLEET_KEY):
            return
        observation = Observation(
            event_id=fact["event_id"],
            agent_id=fact["agent_id"],
            at_ms=fact["at"],
            kind="ERROR" if fact["error"] else "FACT",
            name="",
            cost_usd=fact["cost_usd"],
            ok=not fact["error"],
        )
        firing = self.watch.observe_fleet(observation)
        if firing is not None:
            self._halt(ctx, firing, event.timestamp_ms)

    def _chain_fact(
        self, key: str, fact: Mapping[str, Any], event: Event, ctx: Context[Halt]
    ) -> None:
        if key in self.book.halts or key in self.issued:
            return
        observation = ChainObservation(
            event_id=fact["event_id"],
            correlation_id=key.removeprefix(CHAIN_PREFIX),
            agent_id=fact["agent_id"],
            at_ms=fact["at"],
            kind=fact.get("kind") or "",
            hop_count=int(fact.get("hop_count") or 0),
            cost_usd=fact["cost_usd"],
            tokens=int(fact.get("tokens") or 0),
        )
        firing = self.chains.observe(observation)
        if firing is not None:
            self._halt(ctx, firing, event.timestamp_ms)

    def _rate_fact(self, fact: Mapping[str, Any], event: Event, ctx: Context[Halt]) -> None:
        if self._halted(FLEET_KEY):
            return
        outcome = self.rates.observe(str(fact.get("kind") or ""), fact["at"], fact["event_id"])
        if isinstance(outcome, Throttle):
            envelope = new_envelope(MESH_SIGNER, "", recipient_kind=RecipientKind.BROADCAST)
            value = self.codec.seal(envelope, THROTTLE_SUBJECT, outcome.to_record(), self.key)
            ctx.emit_raw(THROTTLES, outcome.kind, value)
            self.throttles_issued += 1
        elif outcome is not None:
            self._halt(ctx, outcome, event.timestamp_ms)

    def _halted(self, agent_id: str) -> bool:
        if not self.issued and not self.book.halts:
            return False
        return halt_in_force({**self.book.halts, **self.issued}, agent_id) is not None

    def _halt(self, ctx: Context[Halt], firing: Firing, trigger_ms: int) -> None:
        scope = _SCOPES[self.policy.scope(firing.rule)]
        if scope is Scope.CHAIN:  # the chain's participants, for the record only
            target, affected = firing.agent_id, self.chains.participants(firing.agent_id)
        else:
            target, affected = _radius(ctx.agents, scope, firing.agent_id)
        record = control_record(
            Action.HALT,
            scope,
            target,
            rule=firing.rule,
            reason=firing.reason,
            requested_by=self.requested_by,
            affected=affected,
            evidence=firing.evidence,
            trigger_produced_at=trigger_ms,
            policy_hash=self.policy_hash,
        )
        key = control_key(scope, target)
        self.issued[key] = record
        self.halts_issued += 1
        ctx.emit_raw(CONTROL, key, seal_control(self.codec, self.key, record, ctx.now_ms))

    # -- control ---------------------------------------------------------------------------

    def _control(self, event: Event, ctx: Context[Halt]) -> None:
        if event.value is None or event.key is None:
            raise EventRejectedError("a tombstone on the control topic changes nothing")
        opened = check_control(event.message, self.signers)
        key = event.key
        self.issued.pop(key, None)
        outcome = self.book.apply(key, opened.body, opened.envelope.sender)
        if outcome.stale is not None:
            raise EventRejectedError(
                f"control command under {key!r} changed nothing: {outcome.stale}"
            )
        if outcome.lifted is None:
            return
        if key.startswith(CHAIN_PREFIX):
            self.chains.forget(key.removeprefix(CHAIN_PREFIX))
        elif key == "*":
            self.watch.reset_fleet()
            self.rates.reset()
        else:
            self.watch.reset([key, *outcome.lifted.get("affected_agents", [])])


FLEET_KEY = "*"
RATE_PREFIX = "rate:"
FLEET_FACT_SUBJECT = "mesh.killswitch.FleetFact"
REGISTERED = "mesh.registry.AgentRegistered"
HEARTBEAT = "mesh.registry.Heartbeat"


def registration(identity: AgentKey) -> dict[str, Any]:
    card = {"name": "kill-switch", "description": "the mesh's kill-switch (its liveness)"}
    return {
        "agent_id": identity.agent_id,
        "owner": "mesh",
        "version": "1",
        "public_key": identity.public_bytes,
        "agent_card_json": json.dumps(card),
    }


def _radius(agents: Agents, scope: Scope, agent_id: str) -> tuple[str, list[str]]:
    if scope is Scope.AGENT:
        return agent_id, [agent_id]
    everyone = {a: agents[a] for a in agents if not is_mesh_process(a)}
    if scope is Scope.FLEET:
        return "*", sorted(everyone)
    if scope is Scope.DEPENDANTS:
        return agent_id, [agent_id, *dependants(everyone, agent_id)]
    skills = capabilities(everyone.get(agent_id))
    if not skills:  # nothing to widen to: the agent alone
        return agent_id, [agent_id]
    return skills[0], with_capability(everyone, skills[0])
