"""A compacted topic read into memory: the latest value of every key (a global table).

Used where state must be seen whole rather than per assigned partition: the CLI's views of the
registry and state, and the registry's public keys for processors that verify senders.
"""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.settings import Settings

__all__ = ["Table"]


class Table:
    """Latest raw value per key of ``topic``; ``catch_up()`` reads what is new."""

    def __init__(self, settings: Settings, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.values: dict[bytes, bytes] = {}
        self._consumer = reader(settings, bootstrap)
        metadata = self._consumer.list_topics(topic, timeout=15)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        self._partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        self._consumer.assign(self._partitions)

    def catch_up(self) -> int:
        return read_to_end(self._consumer, self._partitions, self._fold)

    def close(self) -> None:
        self._consumer.close()

    def _fold(self, message: Message) -> None:
        key, value = message.key(), message.value()
        if key is None:
            return
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
