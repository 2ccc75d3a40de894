"""Rebuild the store for exactly the assigned partitions, as the processor declared
(:class:`~processors.api.Restore`): the engine calls this inside the assignment callback, before
any record of those partitions is processed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.reading import Reader, newest_first, read_range, read_to_end, reader
from mesh.errors import ProcessorError
from mesh.settings import Cluster
from processors.api import Restore, S
from processors.runtime.core import SOURCE_HEADER, Core, StoredRecord
from processors.runtime.records import SourceRecord

__all__ = ["Committed", "restore_partitions"]

_log = logging.getLogger("mesh.processors")


#: The group's committed offset of each (topic, partition) asked about (-1: none yet).
Committed = Callable[[list[TopicPartition]], dict[tuple[str, int], int]]


def restore_partitions(
    cluster: Cluster,
    core: Core[S],
    partitions: list[int],
    progress: Callable[[int], None],
    committed: Committed | None = None,
) -> int:
    """Drop and rebuild ``partitions`` of the store; returns the records read."""
    core.store.drop(partitions)
    for partition in partitions:
        core.store.partitions[partition] = {}
    if not partitions:
        return 0
    consumer = reader(cluster)
    try:
        if core.processor.restore is Restore.LAST:
            return _heads(consumer, core, partitions, progress)
        assigned = [TopicPartition(core.store_topic, p, OFFSET_BEGINNING) for p in partitions]
        lookback: dict[str, int] = dict(getattr(core.processor, "replay_lookback_ms", {}) or {})
        if core.processor.restore is Restore.SOURCE and lookback and committed is not None:
            return _replay_merged(
                cluster, consumer, core, partitions, lookback, committed, progress
            )
        consumer.assign(assigned)
        fold = _replay if core.processor.restore is Restore.SOURCE else _fold

        def each(message: Message) -> None:
            fold(core, message)
            progress(1)

        return read_to_end(consumer, assigned, each)
    finally:
        consumer.close()


def _heads(
    consumer: Reader, core: Core[S], partitions: list[int], progress: Callable[[int], None]
) -> int:
    read = 0
    for partition in partitions:
        newest = newest_first(consumer, core.store_topic, partition)
        for note in core.adopt_head(partition, _stored(newest, progress)):
            _log.warning("%s[%d]: %s; not adopted as the head", core.store_topic, partition, note)
        read += 1
    return read


def _stored(messages: Iterable[Message], progress: Callable[[int], None]) -> Iterator[StoredRecord]:
    for message in messages:
        progress(1)
        offset = message.offset()
        source = dict(message.headers() or []).get(SOURCE_HEADER)
        if isinstance(source, str):
            source = source.encode()
        yield (-1 if offset is None else offset), message.value(), source


def _replay_merged(
    cluster: Cluster,
    consumer: Reader,
    core: Core[S],
    partitions: list[int],
    lookback: dict[str, int],
    committed: Committed,
    progress: Callable[[int], None],
) -> int:
    """SOURCE with lookback: the store topic from its beginning and the last ``lookback`` ms of
    each input up to what the group committed, replayed together in time order."""
    found: list[Message] = []
    store = [TopicPartition(core.store_topic, p, OFFSET_BEGINNING) for p in partitions]
    consumer.assign(store)
    read_to_end(consumer, store, found.append)
    now_ms = int(time.time() * 1000)
    for name, ms in lookback.items():
        topic = cluster.topic(name)
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = committed(tps)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, now_ms - ms) for p in partitions], 15
        )
        for start in starts:
            end = ends.get((topic, start.partition), -1)
            begin = start.offset if start.offset >= 0 else end
            if end > begin >= 0:
                found += read_range(consumer, TopicPartition(topic, start.partition), begin, end)
    # Time order; at one timestamp the input first: a halt is produced after the telemetry
    # that caused it, and an operator's resume after both.
    found.sort(key=lambda m: (m.timestamp()[1], m.topic() == core.store_topic))
    for message in found:
        _replay(core, message)
        progress(1)
    done = getattr(core.processor, "restored", None)
    if done is not None:
        done()
    return len(found)


def _fold(core: Core[S], message: Message) -> None:
    source = dict(message.headers() or []).get(SOURCE_HEADER)
    if isinstance(source, str):
        source = source.encode()
    core.restore(_partition(message), message.key(), message.value(), source)


def _replay(core: Core[S], message: Message) -> None:
    topic, offset = message.topic(), message.offset()
    if topic is None or offset is None:
        raise ProcessorError(f"{core.store_topic}: a restored record has no position")
    timestamp = message.timestamp()[1]
    record = SourceRecord(
        topic, _partition(message), offset, timestamp, message.key(), message.value()
    )
    core.replay(record, timestamp)


def _partition(message: Message) -> int:
    partition = message.partition()
    if partition is None:
        raise ProcessorError(f"{message.topic()}: a restored record has no partition")
    return partition
