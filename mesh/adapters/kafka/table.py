"""A compacted topic read into memory: the latest decoded value of every key (a global table).

The one fold helper for read-a-topic-into-state: the processor runtime's global tables (the
agent registry), the CLI's views of the registry, and ``mesh halts`` all read through it.

* :meth:`Table.catch_up` reads every partition to its end (blocking; at start and when a
  reader must be sure it has seen everything written so far);
* :meth:`Table.poll` folds only what the client has already fetched in the background
  (non-blocking; the runtime calls it between batches, so processing never waits on it).

A value that does not decode is skipped, logged and kept in ``skipped`` (with where it was and
why), never raised: one bad record on a shared topic must not take every reader down. A
tombstone deletes its key. (The control topic is not a table: it is folded in log order through
``mesh.domain.control.HaltBook``, ``mesh.adapters.commands.read_halts``.)
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.reading import (
    offset_at_time,
    partitions_of,
    read_available,
    read_to_end,
    reader,
)
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["Table", "TopicFold"]

V = TypeVar("V")
F = TypeVar("F", bound="TopicFold")
_log = logging.getLogger("mesh.table")


class TopicFold(ABC):
    """Every partition of one topic (its full name) from its beginning, handed record by record
    to :meth:`_fold`: the one reading loop of the global tables (agents, halts, keys, policies).
    ``since_ms``: from the first record at or after that time instead (an event topic followed
    from a point, such as the console reading the acknowledgements of the halts in force).
    """

    def __init__(self, cluster: Cluster, topic: str, since_ms: int | None = None) -> None:
        self.topic = topic
        self._consumer = reader(cluster)
        try:
            partitions = partitions_of(self._consumer, topic)
            self._partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
            if since_ms is not None:
                self._partitions = self._from_time(since_ms)
        except MeshError:
            self._consumer.close()
            raise
        self._consumer.assign(self._partitions)

    def _from_time(self, since_ms: int) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, offset_at_time(self._consumer, tp, since_ms))
            for tp in self._partitions
        ]

    def catch_up(self) -> int:
        """Read every partition to its current end; returns the records read."""
        return read_to_end(self._consumer, self._partitions, self._fold)

    def poll(self, max_records: int = 1000, wait_s: float = 0.0) -> int:
        """Fold what has already arrived, without waiting (or up to ``wait_s`` for a first
        record: a reader with nothing else to do); returns the records folded."""
        return read_available(self._consumer, self._fold, max_records, wait_s)

    def close(self) -> None:
        self._consumer.close()

    def read_once(self: F) -> F:
        """Read every partition to its end, then close: a one-shot fold (a `mesh` command,
        a look at the topic as it stands now). Returns the table, folded."""
        try:
            self.catch_up()
        finally:
            self.close()
        return self

    @abstractmethod
    def _fold(self, message: Message) -> None:
        """Fold one record into the subclass's state."""


class Table(TopicFold, Generic[V]):
    """Latest value per key of ``topic`` (its full name), decoded by ``decode``."""

    def __init__(
        self,
        cluster: Cluster,
        topic: str,
        decode: Callable[[bytes], V],
    ) -> None:
        self.values: dict[str, V] = {}
        self.skipped: list[str] = []
        self._decode = decode
        super().__init__(cluster, topic)

    def _fold(self, message: Message) -> None:
        raw_key, value = message.key(), message.value()
        if raw_key is None:
            return
        key = raw_key.decode(errors="replace")
        if value is None:
            self.values.pop(key, None)
            return
        try:
            self.values[key] = self._decode(value)
        except MeshError as exc:
            where = f"{self.topic}[{message.partition()}]@{message.offset()}"
            self.skipped.append(f"{where}: {exc}")
            _log.warning("%s: skipped a value that does not decode: %s", where, exc)
