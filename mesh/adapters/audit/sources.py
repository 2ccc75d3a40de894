"""Read the audited topics back to check the audit against them (see
:mod:`mesh.domain.audit.sources`): what each link claims about its source record, and, with
completeness, that every source record is recorded. One ``read_committed`` pass per source
partition."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from confluent_kafka import Consumer, TopicPartition

from mesh.adapters.audit.log import Claims
from mesh.adapters.kafka.reading import read_range, reader, watermarks
from mesh.domain.audit.sources import Claim, SourceReport, compare_partition
from mesh.domain.topics import INBOX_PATTERN
from mesh.settings import Cluster

__all__ = ["audited_ends", "check_sources"]

#: (topic, partition) -> end offset: the point up to which the audit must be complete.
Ends = Mapping[tuple[str, int], int]


def audited_ends(cluster: Cluster, fixed: tuple[str, ...]) -> dict[tuple[str, int], int]:
    """The end offset of every partition of every audited topic (``fixed`` and the agent
    inboxes), measured now: read before the audit log, it states what must be recorded."""
    consumer = reader(cluster)
    try:
        topics = consumer.list_topics(timeout=10).topics
        pattern = re.compile(f"^{re.escape(cluster.prefix)}{INBOX_PATTERN}")
        names = [cluster.topic(t) for t in fixed] + sorted(t for t in topics if pattern.match(t))
        ends = {}
        for name in names:
            meta = topics.get(name)
            for partition in sorted(meta.partitions if meta is not None else ()):
                ends[(name, partition)] = watermarks(consumer, TopicPartition(name, partition))[1]
        return ends
    finally:
        consumer.close()


def check_sources(cluster: Cluster, claims: Claims, ends: Ends | None = None) -> SourceReport:
    """Compare every claim with the source record it names, wherever it is retained; with
    ``ends``, also require every source record before them to be recorded."""
    report = SourceReport()
    consumer = reader(cluster)
    try:
        known = set(consumer.list_topics(timeout=10).topics)
        for key in sorted(set(claims) | set(ends or {})):
            topic, partition = key
            wanted = claims.get(key, [])
            if topic not in known:
                report.not_retained += len(wanted)
                continue
            until = None if ends is None else ends.get(key)
            report.add(_partition(consumer, topic, partition, wanted, until))
    finally:
        consumer.close()
    return report


def _partition(
    consumer: Consumer, topic: str, partition: int, claims: list[Claim], until: int | None
) -> SourceReport:
    tp = TopicPartition(topic, partition)
    low, high = watermarks(consumer, tp)
    offsets = [c.source_offset for c in claims]
    start = low if until is not None else max(low, min(offsets, default=high))
    last = max([*offsets, (until or 0) - 1], default=-1)
    end = min(high, last + 1)
    found = _values(consumer, tp, start, end)
    return compare_partition(topic, partition, claims, low, high, found, until)


def _values(
    consumer: Consumer, tp: TopicPartition, start: int, end: int
) -> Iterator[tuple[int, bytes | None]]:
    for message in read_range(consumer, tp, start, end):
        yield int(message.offset() or 0), message.value()
