"""Read partitions to their end: the one way the mesh restores state from a topic.

"The end" is each partition's high watermark measured when the read starts. A consumer's
position moves past transaction markers as well as records, so it reaches the watermark even
when the last thing in the log is a commit marker. ``read_committed`` readers wait for an
open transaction to end; callers bound that with their writers' transaction timeout.

Why the watermark comes from a second, ``read_uncommitted`` consumer (the :class:`Reader`'s
probe): asked by a ``read_committed`` consumer, the broker answers with the last stable offset
instead. Just after ``commit_transaction`` returns, the coordinator may not have written the
commit markers yet, so the last stable offset still sits before the transaction that just
committed; reading "to the end" would stop short of it, and a processor restoring its state
would miss its own last commit (the audit log forked this way when a rebalance followed a
commit). Reading to the high watermark instead waits for those markers.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from mesh.adapters.kafka.config import base_config
from mesh.errors import KafkaUnavailableError, TopicNotFoundError
from mesh.settings import Cluster

__all__ = [
    "Reader",
    "last_record",
    "newest_first",
    "partitions_of",
    "read_available",
    "read_range",
    "read_to_end",
    "reader",
    "watermarks",
]

_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
)


class Reader(Consumer):
    """A ``read_committed`` consumer with a ``read_uncommitted`` probe for the high watermark.

    ``assign`` asks for a topic's metadata first the first time it sees the topic: left to
    itself, librdkafka learns the leaders of a newly assigned topic on its one-second topic
    scan, so every restore that touched a second topic waited about a second for nothing.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.bootstrap = str(config.get("bootstrap.servers", ""))
        self.probe = Consumer({**config, "isolation.level": "read_uncommitted"})
        self._known: set[str] = set()

    def assign(self, partitions: list[TopicPartition]) -> None:
        for topic in sorted({tp.topic for tp in partitions} - self._known):
            _metadata(self, topic, 10)
            self._known.add(topic)
        super().assign(partitions)

    def close(self) -> None:
        self.probe.close()
        super().close()


def reader(cluster: Cluster) -> Reader:
    """A group-less, read_committed consumer for assigning partitions by hand."""
    return Reader(
        {
            **base_config(cluster),
            "group.id": f"mesh-reader-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "allow.auto.create.topics": False,
            # A read to the end ends on an empty fetch (past the last commit marker); the
            # default 500 ms long poll made every restore of a partition cost half a second.
            "fetch.wait.max.ms": 10,
        }
    )


def watermarks(
    consumer: Consumer, partition: TopicPartition, timeout_s: float = 15.0
) -> tuple[int, int]:
    """(low, high) of a partition, retrying while a new topic's leader is being elected.

    ``high`` is the high watermark when ``consumer`` is a :class:`Reader` (see the module
    docstring); a plain ``read_committed`` consumer gets the last stable offset.
    """
    probe = consumer.probe if isinstance(consumer, Reader) else consumer
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = probe.get_watermark_offsets(partition, 5.0, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            transient = exc.args[0].retriable() or exc.args[0].code() in _NOT_READY
            if not transient or time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"cannot read {partition.topic}[{partition.partition}]: {exc}. Is the broker "
                    "up and the topic created (`mesh topics ensure`)?"
                ) from exc
            # The leader may have moved (a broker died): a probe that only asks for offsets
            # would keep asking the dead one until its metadata next refreshes (minutes), so
            # refresh it now.
            with contextlib.suppress(KafkaException):
                probe.list_topics(partition.topic, timeout=2)
            time.sleep(0.1)


def offset_at_time(consumer: Consumer, tp: TopicPartition, at_ms: int) -> int:
    """The offset of ``tp``'s first record at or after ``at_ms`` (its end if none is that
    late)."""
    try:
        found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, at_ms)], 15)[0]
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot find offsets by time in {tp.topic}: {exc}") from exc
    if found.error is not None:
        raise KafkaUnavailableError(f"cannot find offsets by time in {tp.topic}: {found.error}")
    return int(found.offset) if found.offset >= 0 else watermarks(consumer, tp)[1]


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    """The partition numbers of ``topic``; raise TopicNotFoundError if it does not exist."""
    metadata = _metadata(consumer, topic, 15).topics.get(topic)
    if metadata is None or not metadata.partitions:
        raise TopicNotFoundError(
            f"topic {topic} does not exist; run `mesh topics ensure` (or `mesh up`)"
        )
    return sorted(metadata.partitions)


def _metadata(consumer: Consumer, topic: str, timeout_s: float) -> Any:
    """The cluster's metadata for ``topic``; an unreachable cluster is named as such."""
    try:
        return consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        where = getattr(consumer, "bootstrap", "the configured brokers")  # a Reader knows
        raise KafkaUnavailableError(
            f"no Kafka broker answered at {where} within {timeout_s:g}s "
            f"({exc.args[0].str()}). Is it up (`mesh kafka up`, `mesh status`), and is "
            "MESH_BOOTSTRAP_SERVERS right?"
        ) from exc


def read_available(
    consumer: Consumer,
    on_message: Callable[[Message], None],
    max_records: int = 1000,
    wait_s: float = 0.0,
) -> int:
    """Call ``on_message`` for what the client has already fetched, without waiting (a
    global table folded between batches), or waiting up to ``wait_s`` for the first record;
    returns the records folded."""
    folded = 0
    first = consumer.poll(wait_s) if wait_s > 0 else None  # wakes on the first record
    for message in ([first] if first is not None else []) + consumer.consume(max_records, 0):
        error = message.error()
        if error is None:
            on_message(message)
            folded += 1
        elif error.code() != KafkaError._PARTITION_EOF:
            raise KafkaUnavailableError(f"following {message.topic()} failed: {error}")
    return folded


def read_to_end(
    consumer: Consumer,
    partitions: list[TopicPartition],
    on_message: Callable[[Message], None],
    timeout_s: float = 60.0,
) -> int:
    """Call ``on_message`` for every record from where ``consumer`` is to each partition's end.

    ``partitions`` must already be assigned to ``consumer`` (at the offsets to start from).
    """
    ends = {(tp.topic, tp.partition): watermarks(consumer, tp) for tp in partitions}
    pending = {key for key, (low, high) in ends.items() if high > low}
    count = 0
    deadline = time.monotonic() + timeout_s
    pending = {key for key in pending if _position(consumer, key) < ends[key][1]}
    while pending:
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"reading {sorted(pending)} to the end timed out after {timeout_s:.0f}s; is a "
                "writer stuck in a transaction, or the broker overloaded?"
            )
        message = consumer.poll(0.2)
        if message is not None:
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaUnavailableError(f"reading {message.topic()} failed: {error}")
            if error is None:
                on_message(message)
                count += 1
        pending = {key for key in pending if _position(consumer, key) < ends[key][1]}
    return count


def _position(consumer: Consumer, key: tuple[str, int]) -> int:
    return int(consumer.position([TopicPartition(key[0], key[1])])[0].offset)


def last_record(consumer: Consumer, topic: str, partition: int) -> Message | None:
    """The last committed record of one partition (None if it has none)."""
    return next(newest_first(consumer, topic, partition), None)


def newest_first(consumer: Consumer, topic: str, partition: int) -> Iterator[Message]:
    """The committed records of one partition from the newest back, read lazily.

    Reads back from the end in growing windows: offsets are also taken by transaction markers
    and aborted records, so the last record may sit some way before the high watermark.
    """
    low, end = watermarks(consumer, TopicPartition(topic, partition))
    window = 16
    while end > low:
        start = max(low, end - window)
        found: list[Message] = []
        consumer.assign([TopicPartition(topic, partition, start)])
        read_to_end(consumer, [TopicPartition(topic, partition)], found.append)
        yield from reversed([m for m in found if (m.offset() or 0) < end])
        end = start
        window *= 8


def read_range(consumer: Consumer, tp: TopicPartition, start: int, end: int) -> Iterator[Message]:
    """The committed records of one partition with ``start <= offset < end``, in order.

    ``end`` must not lie past the high watermark; offsets taken by transaction markers or
    aborted records are simply absent.
    """
    if start >= end:
        return
    consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
    while True:
        message = consumer.poll(1.0)
        if message is None:
            if _position(consumer, (tp.topic, tp.partition)) >= end:
                return
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                if _position(consumer, (tp.topic, tp.partition)) >= end:
                    return
                continue
            raise KafkaUnavailableError(f"reading {tp.topic}[{tp.partition}] failed: {error}")
        offset = message.offset()
        if offset is None or offset >= end:
            return
        yield message
