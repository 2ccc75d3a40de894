"""A task's shared context as the state projections processor holds it (``mesh.state.v1``).

Reads the one partition the task id hashes to, from its beginning (the topic is compacted, so
this is about one record per task), and returns the newest state. Blocking: the sidecar calls
it in a worker thread.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.partitioning import partition_for
from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.adapters.serde.codec import Serde
from mesh.domain.topics import STATE
from mesh.settings import Settings

__all__ = ["read_task_state"]


def read_task_state(
    settings: Settings, bootstrap: str, serde: Serde, task_id: str
) -> dict[str, Any] | None:
    """The task's current state record (None: the mesh has seen no event of it)."""
    topic = f"{settings.topic_prefix}{STATE}"
    consumer = reader(settings, bootstrap)
    try:
        partitions = len(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
        tp = TopicPartition(topic, partition_for(task_id.encode(), partitions), OFFSET_BEGINNING)
        consumer.assign([tp])
        latest: list[bytes | None] = [None]

        def fold(message: Message) -> None:
            if message.key() == task_id.encode():
                latest[0] = message.value()

        read_to_end(consumer, [tp], fold)
    finally:
        consumer.close()
    return serde.decode(latest[0]).record if latest[0] is not None else None
