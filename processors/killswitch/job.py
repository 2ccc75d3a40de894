"""The kill-switch processor: ``mesh.telemetry.v1`` (+ ``mesh.control.v1``) -> halts.

Per telemetry event: open the envelope, verify it against the sender's registered key (forged
telemetry must not halt anyone), check the sender reports about itself, and feed the sliding
windows (:mod:`processors.killswitch.watch`). A rule that fires publishes one HALT to
``mesh.control.v1`` in the same transaction as the consumer offsets, signed by the mesh's key.

Flapping: while an agent (or the fleet) is halted, no rule fires for it again; a resume on the
control topic, by an operator, starts fresh windows. The halts in force are restored from the
control topic's assigned partitions on start and rebalance. Only control commands signed by a
control signer (:func:`mesh.adapters.keyfiles.control_signers`) count; any other record
on the control topic is dead-lettered with the reason, as sidecars ignore it.

Scaling: per-agent rules partition with telemetry (keyed by agent id); fleet rules see the
partitions of their own instance, so run one kill-switch instance (a second one is a hot
standby that takes over all partitions on a rebalance) for exact fleet windows.

Windows are kept in memory: after a restart they start empty, while the halts stay in force.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.adapters.keyfiles import control_signers
from mesh.adapters.serde.control import open_control, seal_control
from mesh.adapters.serde.messages import MessageCodec, OpenedMessage
from mesh.domain.control import Action, HaltBook, Scope, control_key, control_record
from mesh.domain.deadletter import SourceCoordinates, dead_letter_value
from mesh.domain.dependencies import capabilities, dependants, with_capability
from mesh.domain.identity import AgentKey
from mesh.domain.topics import CONTROL, DLQ, TELEMETRY
from mesh.errors import (
    EventRejectedError,
    IdentityError,
    MeshError,
    SerdeError,
    TableBehindError,
)
from mesh.settings import Settings
from processors.killswitch.policy import Policy
from processors.killswitch.watch import Firing, Observation, Watch
from processors.runtime.core import OutRecord, SourceRecord
from processors.runtime.job import Progress
from processors.runtime.tables import Tables

__all__ = ["KillSwitchJob"]

TELEMETRY_SUBJECT = "mesh.telemetry.TelemetryEvent"
_REFUSALS = (SerdeError, IdentityError, EventRejectedError)
_SCOPES = {
    "agent": Scope.AGENT,
    "dependants": Scope.DEPENDANTS,
    "capability": Scope.CAPABILITY,
    "fleet": Scope.FLEET,
}


class KillSwitchJob:
    name = "killswitch"
    punctuate_every_ms: int | None = None

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        codec: MessageCodec,
        tables: Tables,
        key: AgentKey,
        policy: Policy,
        instance: str = "0",
        clock: Callable[[], float] = time.time,
        signers: Mapping[str, bytes] | None = None,
    ) -> None:
        """``signers``: who may sign halts and resumes (default: control_signers(settings));
        control records signed by anyone else are dead-lettered and change nothing."""
        prefix = settings.topic_prefix
        self.settings, self.bootstrap = settings, bootstrap
        self.codec, self.tables, self.key = codec, tables, key
        self.policy = policy
        self.prefix = prefix
        self.telemetry_topic = f"{prefix}{TELEMETRY}"
        self.control_topic = f"{prefix}{CONTROL}"
        self.subscription: tuple[str, ...] = (self.telemetry_topic, self.control_topic)
        self.copartitioned: tuple[str, ...] = self.subscription
        self.detected_by = f"processor:killswitch:{instance}"
        self.requested_by = f"killswitch:{instance}"
        self.clock = clock
        self.book = HaltBook()
        self.signers = dict(signers) if signers is not None else control_signers(settings)
        self.watch = Watch(policy)
        self.halts_issued = 0

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    # -- records ---------------------------------------------------------------------------

    def handle(self, record: SourceRecord, now_ms: int) -> list[OutRecord]:
        try:
            if record.topic == self.control_topic:
                if record.value is not None:  # a tombstone lifts nothing (see HaltBook.apply)
                    self._follow_control(
                        record, open_control(self.codec, record.value, self.signers)
                    )
                return []
            message = self.codec.open(record.value or b"", verify=False)
            return self._telemetry(record, message, now_ms)
        except _REFUSALS as exc:
            return [self._dead_letter(record, exc, now_ms)]

    def punctuate(self, now_ms: int) -> list[OutRecord]:
        return []

    def _telemetry(
        self, record: SourceRecord, message: OpenedMessage, now_ms: int
    ) -> list[OutRecord]:
        envelope, body = message.envelope, message.body
        if message.body_subject != TELEMETRY_SUBJECT:
            raise EventRejectedError(
                f"{self.telemetry_topic} carries {TELEMETRY_SUBJECT}, not {message.body_subject}"
            )
        message.verify(self._public_key(envelope.sender))
        if body["agent_id"] != envelope.sender:
            raise EventRejectedError(
                f"telemetry about {body['agent_id']!r} was signed by {envelope.sender!r}; an "
                "agent reports only about itself"
            )
        observation = Observation(
            event_id=envelope.message_id,
            agent_id=envelope.sender,
            at_ms=record.timestamp_ms,
            kind=body["kind"],
            name=body["name"],
            cost_usd=body["cost_usd"],
            ok=body["ok"],
            peer=body["peer"],
            arguments_digest=body["arguments_digest"],
            hop_count=envelope.hop_count,
            correlation_id=envelope.correlation_id,
        )
        if self._halted(observation.agent_id):
            return []
        outputs = []
        for firing in self.watch.observe(observation):
            if firing.agent_id != "*" and self._halted(firing.agent_id):
                continue
            outputs.append(self._halt(firing, record.timestamp_ms, now_ms))
        return outputs

    def _public_key(self, sender: str) -> bytes:
        try:
            return self.tables.view().public_key(sender)
        except TableBehindError:  # registered a moment ago? read the table to its end, once
            self.tables.catch_up()
            return self.tables.view(False).public_key(sender)

    def _halted(self, agent_id: str) -> bool:
        if not self.book.halts:
            return False
        return self.book.halt_for(agent_id) is not None

    def _halt(self, firing: Firing, trigger_ms: int, now_ms: int) -> OutRecord:
        scope = _SCOPES[self.policy.scope(firing.rule)]
        target, affected = self._radius(scope, firing.agent_id)
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
        )
        key = control_key(scope, target)
        self.book.apply(key, record)
        self.halts_issued += 1
        value = seal_control(self.codec, self.key, record, int(self.clock() * 1000))
        return OutRecord(self.control_topic, key.encode(), value)

    def _radius(self, scope: Scope, agent_id: str) -> tuple[str, list[str]]:
        if scope is Scope.AGENT:
            return agent_id, [agent_id]
        agents = self.tables.view(False)  # refreshed between batches: no read on the halt path
        if scope is Scope.FLEET:
            return "*", sorted(agents)
        if scope is Scope.DEPENDANTS:
            return agent_id, [agent_id, *dependants(agents, agent_id)]
        skills = capabilities(agents.get(agent_id))
        if not skills:  # nothing to widen to: the agent alone
            return agent_id, [agent_id]
        return skills[0], with_capability(agents, skills[0])

    # -- control ---------------------------------------------------------------------------

    def _follow_control(self, record: SourceRecord, message: OpenedMessage) -> None:
        key = (record.key or b"").decode()
        lifted = self.book.apply(key, message.body)
        if lifted is None:
            return
        if key == "*":
            self.watch.reset_fleet()
        else:
            self.watch.reset([key, *lifted.get("affected_agents", [])])

    def assigned(self, partitions: list[int], progress: Progress) -> int:
        """Restore the halts in force from the control topic's assigned partitions."""
        for key in [k for k in self.book.halts]:
            self.book.halts.pop(key)
        consumer = reader(self.settings, self.bootstrap)
        tps = [TopicPartition(self.control_topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(tps)

        def fold(msg: Message) -> None:
            value = msg.value()
            progress(1)
            if value is None:
                return
            try:
                opened = open_control(self.codec, value, self.signers)
            except MeshError:
                return  # dead-lettered when it was first consumed; nothing to restore
            self.book.apply((msg.key() or b"").decode(), opened.body)

        try:
            return read_to_end(consumer, tps, fold)
        finally:
            consumer.close()

    def revoked(self, partitions: list[int]) -> None:
        return None  # halts are few and global in effect; keep them

    def _dead_letter(self, record: SourceRecord, error: MeshError, now_ms: int) -> OutRecord:
        source = SourceCoordinates(record.topic, record.partition, record.offset, record.key)
        value = dead_letter_value(
            self.codec.serde, error, record.value or b"", self.detected_by, source, now_ms
        )
        return OutRecord(f"{self.prefix}{DLQ}", record.key, value)
