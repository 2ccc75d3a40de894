"""Reading the audit log back from Kafka: links, checkpoints, and the topic's own configs.

Every reader here is ``read_committed`` and stops at the high watermark measured when it
starts, so a verification covers a fixed range even while the audit processor keeps writing.
A time window selects audit records by their Kafka timestamp (when they were recorded).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import NamedTuple

from confluent_kafka import Consumer, TopicPartition

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.reading import offset_at_time, read_range, reader, watermarks
from mesh.adapters.serde.codec import Serde
from mesh.domain.audit.chain import AUDIT_SUBJECT, CHECKPOINT_SUBJECT, Checkpoint, Link
from mesh.domain.audit.sources import Claim
from mesh.domain.audit.verify import Entry, PartitionResult, verify_partition
from mesh.domain.topics import AUDIT, AUDIT_CHECKPOINTS, catalogue, config_conflicts
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = [
    "ALL_TIME",
    "AuditLog",
    "Claims",
    "Window",
    "in_source_order",
    "verify_log",
    "verify_one",
]


class Window(NamedTuple):
    """A time range in epoch ms (None: open on that side)."""

    from_ms: int | None = None
    to_ms: int | None = None


ALL_TIME = Window()


class AuditLog:
    def __init__(self, cluster: Cluster, serde: Serde) -> None:
        self.cluster = cluster
        self.serde = serde
        self.topic = cluster.topic(AUDIT)
        self.checkpoint_topic = cluster.topic(AUDIT_CHECKPOINTS)

    def partitions(self) -> list[int]:
        live = TopicAdmin(self.cluster).topic_partitions()
        if self.topic not in live:
            raise MeshError(f"{self.topic} does not exist; run `mesh topics ensure` first")
        return list(range(live[self.topic]))

    def config_problems(self) -> list[str]:
        """How the live audit topic's configs break its guarantees (compaction, retention)."""
        spec = next(s for s in catalogue() if s.name == AUDIT)
        live = TopicAdmin(self.cluster).topic_configs([self.topic])
        return [f"{self.topic}: {p}" for p in config_conflicts(spec, live.get(self.topic, {}))]

    def entries(self, partition: int, window: Window = ALL_TIME) -> Iterator[Entry]:
        """The audit records of one partition within ``window``, decoded, in offset order."""
        for offset, value in _read(self._consumer(), self.topic, partition, window):
            yield self.entry(partition, offset, value)

    def entry(self, partition: int, offset: int, value: bytes | None) -> Entry:
        if value is None:
            return Entry(offset, None, "a tombstone")
        try:
            decoded = self.serde.decode(value)
        except MeshError as exc:
            return Entry(offset, None, str(exc))
        if decoded.subject != AUDIT_SUBJECT:
            return Entry(offset, None, f"a {decoded.subject} record")
        try:
            return Entry(offset, Link.from_record(partition, decoded.record))
        except (KeyError, TypeError) as exc:
            return Entry(offset, None, f"missing field {exc}")

    def checkpoints(self, partition: int) -> list[Checkpoint]:
        found = []
        for _, value in _read(self._consumer(), self.checkpoint_topic, partition, ALL_TIME):
            if value is None:
                continue
            decoded = self.serde.decode(value)
            if decoded.subject == CHECKPOINT_SUBJECT:
                found.append(Checkpoint.from_record(decoded.record))
        return found

    def _consumer(self) -> Consumer:
        return reader(self.cluster)


def _read(
    consumer: Consumer, topic: str, partition: int, window: Window
) -> Iterator[tuple[int, bytes | None]]:
    """(offset, value) of one partition from the window's start to its end, then close."""
    try:
        tp = TopicPartition(topic, partition)
        low, high = watermarks(consumer, tp)
        start = _offset_at(consumer, tp, window.from_ms, low)
        end = _offset_at(consumer, tp, window.to_ms, high) if window.to_ms is not None else high
        for message in read_range(consumer, tp, start, end):
            yield int(message.offset() or 0), message.value()
    finally:
        consumer.close()


def _offset_at(consumer: Consumer, tp: TopicPartition, at_ms: int | None, default: int) -> int:
    return default if at_ms is None else offset_at_time(consumer, tp, at_ms)


#: What the links of a log claim, by source topic-partition (see :mod:`.sources`).
Claims = dict[tuple[str, int], list[Claim]]


def verify_log(
    log: AuditLog,
    window: Window = ALL_TIME,
    public_key: bytes | None = None,
    claims: Claims | None = None,
) -> list[PartitionResult]:
    """Verify every audit partition in ``window`` (see :mod:`mesh.domain.audit.verify`);
    with ``claims``, also collect what each link read says about its source record."""
    return [verify_one(log, p, window, public_key, claims) for p in log.partitions()]


def verify_one(
    log: AuditLog,
    partition: int,
    window: Window = ALL_TIME,
    public_key: bytes | None = None,
    claims: Claims | None = None,
) -> PartitionResult:
    """Verify one audit partition in ``window`` (a console shows them as they finish)."""
    entries = log.entries(partition, window)
    return verify_partition(
        partition,
        entries if claims is None else _tap(entries, claims),
        log.checkpoints(partition),
        public_key,
        from_start=window.from_ms is None,
        complete=window.to_ms is None,
    )


def in_source_order(log: AuditLog, window: Window) -> Iterator[tuple[int, int, Link]]:
    """(audit partition, audit offset, link) of every link in ``window``, merged in
    source-time order."""

    def links(partition: int) -> Iterator[tuple[int, int, int, int, Link]]:
        for entry in log.entries(partition, window):
            if entry.link is not None:
                link = entry.link
                yield link.source_timestamp_ms, partition, link.sequence, entry.offset, link

    merged = heapq.merge(*(links(p) for p in log.partitions()))
    for _, partition, _, offset, link in merged:
        yield partition, offset, link


def _tap(entries: Iterator[Entry], claims: Claims) -> Iterator[Entry]:
    for entry in entries:
        link = entry.link
        if link is not None:
            claims.setdefault((link.source_topic, link.source_partition), []).append(
                Claim(link.source_offset, link.value_sha256, link.audit_partition, link.sequence)
            )
        yield entry
