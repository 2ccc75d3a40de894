"""Read the audited topics back to check what the audit's links claim about them (see
:mod:`mesh.domain.audit.sources`). One ``read_committed`` pass per source partition, from the
first claim still retained to the last claim."""

from __future__ import annotations

from collections.abc import Iterator

from confluent_kafka import Consumer, TopicPartition

from mesh.adapters.audit.log import Claims
from mesh.adapters.kafka.reading import read_range, reader, watermarks
from mesh.domain.audit.sources import Claim, SourceReport, compare_partition
from mesh.settings import Cluster

__all__ = ["check_sources"]


def check_sources(cluster: Cluster, claims: Claims) -> SourceReport:
    """Compare every claim with the source record it names, wherever it is retained."""
    report = SourceReport()
    consumer = reader(cluster)
    try:
        known = set(consumer.list_topics(timeout=10).topics)
        for (topic, partition), wanted in sorted(claims.items()):
            if topic not in known:
                report.not_retained += len(wanted)
                continue
            report.add(_partition(consumer, topic, partition, wanted))
    finally:
        consumer.close()
    return report


def _partition(consumer: Consumer, topic: str, partition: int, claims: list[Claim]) -> SourceReport:
    tp = TopicPartition(topic, partition)
    low, high = watermarks(consumer, tp)
    offsets = [c.source_offset for c in claims]
    start = max(low, min(offsets))
    end = min(high, max(offsets) + 1)
    return compare_partition(topic, partition, claims, low, high, _values(consumer, tp, start, end))


def _values(
    consumer: Consumer, tp: TopicPartition, start: int, end: int
) -> Iterator[tuple[int, bytes | None]]:
    for message in read_range(consumer, tp, start, end):
        yield int(message.offset() or 0), message.value()
