"""Which partition a key lands on: the Java client's murmur2 rule (and librdkafka's
``murmur2_random`` and aiokafka's default), computed without a client."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

__all__ = ["partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)
