"""Confirmed halts: wait for the sidecars a halt targets to acknowledge it (``HALT_ACK``).

A halt is produced once; whether anyone stopped is another question. Every sidecar that
applies a halt says so on ``mesh.telemetry`` (``HALT_ACK``, its detail starting with the halt's
command id), signed with its agent's key. :class:`AckWatch` is positioned at the end of the
telemetry topic *before* the halt is produced, so no acknowledgement can be missed, then
collects verified acknowledgements until every target answered or the deadline passed. A
target is each running *instance* of an agent the halt reaches (the registry tracks the
replicas that heartbeat), so one replica that applied the halt does not hide another that did
not; the acknowledgement names its instance (``instance_id`` on telemetry).
Acknowledgements are verified against the key directory (the keys the mesh countersigned,
``mesh.keys.v1``): a forged one cannot hide a straggler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from confluent_kafka import TopicPartition

from mesh.adapters.kafka.reading import partitions_of, reader, watermarks
from mesh.adapters.serde.messages import MessageCodec, OpenedMessage
from mesh.domain.agents import AgentState, AgentStatus, live_instances
from mesh.domain.control import is_mesh_process
from mesh.domain.keys import KeyDirectory
from mesh.domain.telemetry import TELEMETRY_SUBJECT, Kind
from mesh.domain.topics import TELEMETRY
from mesh.errors import MeshError, TopicNotFoundError
from mesh.settings import Cluster

__all__ = ["Ack", "AckWatch", "Acks", "ack_of", "acknowledgement", "live_targets"]


class Acks(NamedTuple):
    acknowledged: list[str]
    missing: list[str]


class Ack(NamedTuple):
    """One verified acknowledgement: of which command, by whom, when (the sidecar's clock),
    and its trigger-to-acknowledgement latency (0 unless the halt carried its trigger)."""

    command_id: str
    sender: str
    instance: str
    at_ms: int
    latency_ms: float

    @property
    def targets(self) -> tuple[str, ...]:
        """What it answers for: its instance, and its agent (an agent target with no known
        instances is answered by any of its instances)."""
        if self.instance:
            return (f"{self.sender}/{self.instance}", self.sender)
        return (self.sender,)


def acknowledgement(
    codec: MessageCodec, value: bytes, key_for: Callable[[str], bytes], kind: str
) -> Ack | None:
    """The ``kind`` acknowledgement ``value`` is, verified with its sender's key (``key_for``
    raises MeshError for a sender with none), or None: any other record, or a forged one."""
    try:
        opened = codec.open(value, verify=False)
    except MeshError:
        return None
    return ack_of(opened, key_for, kind)


def ack_of(opened: OpenedMessage, key_for: Callable[[str], bytes], kind: str) -> Ack | None:
    """:func:`acknowledgement` of a message already opened (unverified)."""
    body, sender = opened.body, opened.envelope.sender
    if opened.body_subject != TELEMETRY_SUBJECT or body.get("kind") != kind:
        return None
    command_id, colon, _ = str(body.get("detail") or "").partition(":")
    if not colon:
        return None
    try:
        opened.verify(key_for(sender))
    except MeshError:
        return None  # not an acknowledgement anyone can count
    return Ack(command_id, sender, str(body.get("instance_id") or ""),
               opened.envelope.created_at_ms, float(body.get("latency_ms") or 0.0))  # fmt: skip


def live_targets(agents: Mapping[str, AgentState], affected: Iterable[str]) -> list[str]:
    """What must acknowledge a halt: every running instance (``agent/instance``) of each agent
    it reaches that is running now (live, or already halted by another halt), or the agent
    itself when the registry knows none of its instances; ``affected``: the agents named."""
    running = (AgentStatus.LIVE, AgentStatus.HALTED)
    targets: list[str] = []
    for agent_id in sorted(set(affected)):
        state = agents.get(agent_id)
        if state is None or state.status not in running or is_mesh_process(agent_id):
            continue  # the mesh's own processes are never halted
        instances = live_instances(state)
        targets += [f"{agent_id}/{i}" for i in instances] if instances else [agent_id]
    return targets


class AckWatch:
    def __init__(self, cluster: Cluster, codec: MessageCodec) -> None:
        self._codec = codec
        self._consumer = reader(cluster)
        topic = cluster.topic(TELEMETRY)
        try:
            partitions = partitions_of(self._consumer, topic)
        except TopicNotFoundError:
            self._consumer.close()
            raise
        ends = [  # the end now, before the halt is produced
            TopicPartition(topic, p, watermarks(self._consumer, TopicPartition(topic, p))[1])
            for p in partitions
        ]
        self._consumer.assign(ends)

    def wait(
        self,
        command_id: str,
        targets: Iterable[str],
        keys: KeyDirectory,
        deadline_s: float,
        kind: str = Kind.HALT_ACK,
    ) -> Acks:
        """Collect acknowledgements of ``command_id`` from ``targets`` until all answered or
        ``deadline_s`` passed. ``kind`` RESUME_ACK: of the resume that lifted halt
        ``command_id`` (a sidecar's resume acknowledgement names the halt it lifted)."""
        waiting, acked = set(targets), []
        until = time.monotonic() + deadline_s
        try:
            while waiting and time.monotonic() < until:
                message = self._consumer.poll(0.1)
                if message is None or message.error() is not None:
                    continue
                ack = acknowledgement(self._codec, message.value() or b"", keys.key_for, kind)
                for target in ack.targets if ack and ack.command_id == command_id else ():
                    if target in waiting:
                        waiting.discard(target)
                        acked.append(target)
        finally:
            self._consumer.close()
        return Acks(sorted(acked), sorted(waiting))
