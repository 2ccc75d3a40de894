"""Confirmed halts: wait for the sidecars a halt targets to acknowledge it (``HALT_ACK``).

A halt is produced once; whether anyone stopped is another question. Every sidecar that
applies a halt says so on ``mesh.telemetry`` (``HALT_ACK``, its detail starting with the halt's
command id), signed with its agent's key. :class:`AckWatch` is positioned at the end of the
telemetry topic *before* the halt is produced, so no acknowledgement can be missed, then
collects verified acknowledgements until every target answered or the deadline passed.
Acknowledgements are verified against the key directory (the keys the mesh countersigned,
``mesh.keys.v1``): a forged one cannot hide a straggler.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from confluent_kafka import TopicPartition

from mesh.adapters.kafka.reading import partitions_of, reader, watermarks
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.keys import KeyDirectory
from mesh.domain.telemetry import TELEMETRY_SUBJECT, Kind
from mesh.domain.topics import TELEMETRY
from mesh.errors import MeshError, TopicNotFoundError
from mesh.settings import Cluster

__all__ = ["AckWatch", "Acks", "live_targets"]


class Acks(NamedTuple):
    acknowledged: list[str]
    missing: list[str]


def live_targets(agents: Mapping[str, AgentState], affected: Iterable[str]) -> list[str]:
    """The agents a halt reaches that are running now (live, or already halted by another
    halt); ``affected``: every agent the command names."""
    running = (AgentStatus.LIVE, AgentStatus.HALTED)
    return sorted(a for a in set(affected) if a in agents and agents[a].status in running)


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
    ) -> Acks:
        """Collect acknowledgements of ``command_id`` from ``targets`` until all answered or
        ``deadline_s`` passed."""
        waiting, acked = set(targets), []
        until = time.monotonic() + deadline_s
        try:
            while waiting and time.monotonic() < until:
                message = self._consumer.poll(0.1)
                if message is None or message.error() is not None:
                    continue
                sender = self._acknowledger(message.value() or b"", command_id, keys)
                if sender in waiting:
                    waiting.discard(sender)
                    acked.append(sender)
        finally:
            self._consumer.close()
        return Acks(sorted(acked), sorted(waiting))

    def _acknowledger(self, value: bytes, command_id: str, keys: KeyDirectory) -> str | None:
        try:
            opened = self._codec.open(value, verify=False)
            body, sender = opened.body, opened.envelope.sender
            if opened.body_subject != TELEMETRY_SUBJECT or body.get("kind") != Kind.HALT_ACK:
                return None
            if not str(body.get("detail") or "").startswith(f"{command_id}:"):
                return None
            opened.verify(keys.key_for(sender))
        except MeshError:
            return None  # not an acknowledgement this command can count
        return sender
