"""Rebuild the store for exactly the assigned partitions from the store topic."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.errors import ProcessorError
from mesh.settings import Settings
from processors.api import S
from processors.runtime.core import SOURCE_HEADER, Core

__all__ = ["restore_partitions"]


def restore_partitions(
    settings: Settings,
    bootstrap: str,
    core: Core[S],
    partitions: list[int],
    progress: Callable[[int], None],
) -> int:
    """Drop and re-read ``partitions`` of the store topic; returns the records read."""
    core.store.drop(partitions)
    for partition in partitions:
        core.store.partitions[partition] = {}
    if not partitions:
        return 0
    consumer = reader(settings, bootstrap)
    assigned = [TopicPartition(core.store_topic, p, OFFSET_BEGINNING) for p in partitions]
    consumer.assign(assigned)

    def fold(message: Message) -> None:
        headers = dict(message.headers() or [])
        source = headers.get(SOURCE_HEADER)
        if isinstance(source, str):
            source = source.encode()
        partition = message.partition()
        if partition is None:
            raise ProcessorError(f"{core.store_topic}: a restored record has no partition")
        core.restore(partition, message.key(), message.value(), source)
        progress(1)

    try:
        return read_to_end(consumer, assigned, fold)
    finally:
        consumer.close()
