"""Which partition a key lands on: the Java client's murmur2 rule (and librdkafka's
``murmur2_random`` and aiokafka's default), computed without a client."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

from mesh.errors import TopicNotFoundError

__all__ = ["partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (raise TopicNotFoundError for none: a
    topic with no partitions is a topic that does not exist)."""
    if partitions <= 0:
        raise TopicNotFoundError(
            f"no partitions to place key {key[:40]!r} in: the topic does not exist; run "
            "`mesh topics ensure`"
        )
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)
