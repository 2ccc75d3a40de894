"""How far the audit processor has recorded one source topic: per partition, the records past
its group's committed offset (the processor is exactly-once, so committed means audited).
Records, not offsets: a transaction's commit marker takes an offset and is no lag."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from mesh.adapters.kafka.config import base_config
from mesh.adapters.kafka.reading import partitions_of, read_range, reader, watermarks
from mesh.errors import KafkaUnavailableError
from mesh.settings import Cluster

__all__ = ["audit_lag"]

#: The consumer group of the audit processor (processors.runtime.engine names it).
AUDIT_GROUP = "mesh-audit"


def audit_lag(cluster: Cluster, topic: str) -> dict[int, int] | None:
    """Partition -> records of ``topic`` (a full name) not yet audited; None when the audit
    processor has committed nothing on it (it never read the topic)."""
    probe = reader(cluster)
    committed_by = Consumer(
        {
            **base_config(cluster),
            "group.id": cluster.topic(AUDIT_GROUP),
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = [TopicPartition(topic, p) for p in partitions_of(probe, topic)]
        try:
            committed = committed_by.committed(partitions, timeout=10)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"cannot read the audit's offsets on {topic}: {exc}"
            ) from exc
        lag: dict[int, int] = {}
        for tp in committed:
            low, high = watermarks(probe, tp)
            if tp.offset < 0 and high > low:
                return None
            start = max(tp.offset, low)
            lag[tp.partition] = sum(1 for _ in read_range(probe, tp, start, high))
        return lag
    finally:
        committed_by.close()
        probe.close()
