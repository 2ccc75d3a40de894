"""Exactly-once consume-process-produce on confluent-kafka (transactions, EOS v2 / KIP-447).

One engine runs one processor instance (a :class:`~processors.runtime.job.Job`). It owns a
consumer in the processor's group and one transactional producer with a stable
``transactional.id`` per instance (so a zombie of the same instance is fenced when it
restarts); the job owns the logic and its state.

The commit path, the only place offsets are committed:

0. fold what the global tables (the agent registry) received since the last batch;
1. consume records until the commit interval has passed (or the batch is full);
2. for each, ``Core.handle``: decode, process, apply to the store; refusals become dead letters;
3. on a punctuation tick, ``Core.punctuate`` (e.g. mark silent agents stale);
4. produce every output (the changelog, each key changed in the batch once, to the source's
   partition; dead letters and emits by key or by the partition given);
5. ``send_offsets_to_transaction`` with the consumer's positions and group metadata;
6. ``commit_transaction``.

A failed commit ends this run of the engine (TransactionAbortedError): the in-memory store may
hold changes that did not commit, so the engine closes its clients; the runner
(:mod:`processors.runtime.runner`) starts it again after a backoff, which restores the store from
the committed store topic and resumes from the committed offsets. Nothing is lost or doubled.
Fencing by a newer instance (ProcessorFencedError) is the one commit failure that stops it.

Restore: on every assignment, the job rebuilds its state for exactly the assigned partitions,
as its processor declared (``processors.api.Restore``: the store topic's same partitions read to
their end, replayed, or their last records, ``read_committed``) before any record of those
partitions is processed (the callback runs inside ``consume``).

A rebalance in the middle of a batch (the callbacks run inside ``consume``, e.g. when a new
agent inbox matches the subscription) discards the batch: its outputs were computed from state
the assignment is about to rebuild from what committed, and its records are fetched again from
the committed offsets. Keeping them would commit the batch's outputs twice, once from the old
state and once from the restored one (for the audit log: two links with one sequence, a fork).
Discarding the whole batch is right because the assignment is eager (``range``): a rebalance
revokes every partition, so every one is restored and re-fetched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import consumer_config, transactional_producer_config
from mesh.adapters.serde.messages import MessageCodec
from mesh.errors import (
    KafkaUnavailableError,
    ProcessorError,
    ProcessorFencedError,
    TransactionAbortedError,
)
from mesh.settings import Cluster
from processors.api import Processor, S
from processors.runtime.config import EngineConfig
from processors.runtime.core import OutRecord, SourceRecord
from processors.runtime.finisher import DaemonWorker
from processors.runtime.job import Job
from processors.runtime.metrics import Metrics
from processors.runtime.restore import Committed

__all__ = ["Engine", "EngineConfig"]

#: Consumer events that are not failures: the end of a partition, and a pattern subscription
#: (agent inboxes) that matches no topic yet. Fixed inputs are checked to exist at start.
_NOT_ERRORS = (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART)
#: A newer instance took over: stopping is the only correct answer.
_FENCED = (
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.FENCED_INSTANCE_ID,  # another consumer joined under this group.instance.id
)


@dataclass
class _Batch:
    started: float = field(default_factory=time.monotonic)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    outputs: list[OutRecord] = field(default_factory=list)
    records: int = 0
    oldest_timestamp_ms: int | None = None


class Engine:
    """Runs one :class:`~processors.runtime.job.Job` (one processor instance) on Kafka."""

    def __init__(
        self,
        job: Job[Any],
        cluster: Cluster,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job = job
        self.cluster = cluster
        self.config = config or EngineConfig()
        self.clock = clock
        self.group = cluster.topic(f"mesh-{job.name}")
        self.metrics = Metrics()
        self._running = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._worker: DaemonWorker | None = None  # see _finish; one per start()
        self._wedged = False
        self._assigned: list[TopicPartition] = []
        self._next_tick = 0.0
        self._batch = _Batch()

    @classmethod
    def keyed(
        cls,
        processor: Processor[S],
        cluster: Cluster,
        codec: MessageCodec,
        config: EngineConfig | None = None,
    ) -> Engine:
        """An engine for ``processor`` (its state restored as it declares)."""
        instance = (config or EngineConfig()).instance
        return cls(Job(processor, codec, cluster, instance), cluster, config)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and their state restored."""
        return bool(self._assigned)

    def start(self) -> None:
        """Check topics, take the transactional id (fencing any zombie), join the group."""
        if self._consumer is not None:
            return
        self._check_copartitioned()
        self._worker = DaemonWorker()
        self._producer = self._new_producer()
        self._consumer = Consumer(
            consumer_config(
                self.cluster,
                self.group,
                **{
                    "partition.assignment.strategy": "range",
                    "enable.partition.eof": False,
                    # regex subscriptions (agent inboxes) see new topics within seconds
                    "topic.metadata.refresh.interval.ms": 5_000,
                    "session.timeout.ms": self.config.session_timeout_ms,
                    "heartbeat.interval.ms": max(500, self.config.session_timeout_ms // 4),
                    **self._membership(),
                },
            )
        )
        self._consumer.subscribe(
            list(self.job.subscription), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self.job.tables.catch_up()
        self.job.start()
        self._running = True

    def _new_producer(self) -> Producer:
        """A transactional producer under this instance's id (fencing any earlier one)."""
        producer = Producer(
            transactional_producer_config(
                self.cluster,
                f"{self.group}-{self.config.instance}",
                **{"transaction.timeout.ms": self.config.transaction_timeout_ms, "linger.ms": 1},
            )
        )
        try:
            producer.init_transactions(30)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"{self.group}: cannot start transactions: {exc}") from exc
        return producer

    def _membership(self) -> dict[str, str]:
        if not self.config.static_membership:
            return {}
        return {"group.instance.id": f"{self.group}-{self.config.instance}"}

    def stop(self) -> None:
        """Leave the group cleanly (idempotent). Uncommitted work is simply not committed."""
        self._running = False
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            if self._wedged:  # blocked in the worker: abandon it with its thread (see _finish)
                self._wedged = False
            else:
                self._producer.flush(5)
            self._producer = None
        if self._worker is not None:  # its thread ends (or, wedged, is left behind)
            self._worker.shutdown()
            self._worker = None
        self._assigned = []
        self.job.discard()
        self.job.close()

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        """Process until ``stop()`` is called or ``until()`` says so."""
        self.start()
        try:
            while self._running and not until():
                self.step()
        finally:
            self.stop()

    # -- the commit path -------------------------------------------------------------------

    def step(self) -> int:
        """One transaction's worth of work (see the module docstring); returns records done."""
        consumer, _ = self._clients()
        self.job.tables.refresh()  # between batches: process() never reads Kafka
        self._batch = _Batch()
        deadline = self._batch.started + self.config.commit_interval_ms / 1000
        while self._batch.records < self.config.max_batch:
            messages = consumer.consume(
                self.config.max_batch - self._batch.records, self.config.poll_timeout_s
            )
            batch = self._batch  # after consume: a rebalance inside it replaced the batch
            for message in messages:
                self._handle(message, batch)
            if time.monotonic() >= deadline or not messages:
                break
        batch = self._batch
        self._tick(batch)
        changelog = self.job.flush()  # each key changed in the batch, once
        batch.outputs += changelog
        self.metrics.count(0, len(changelog))
        self._commit(batch)
        self.metrics.sample_lag(consumer, self._assigned)
        return batch.records

    def _handle(self, message: Message, batch: _Batch) -> None:
        error = message.error()
        if error is not None:
            if error.code() in _NOT_ERRORS:
                return
            if error.code() in _FENCED:
                self._running = False
                raise ProcessorFencedError(
                    f"{self.group}-{self.config.instance}: fenced by a newer instance with the "
                    f"same id ({error}); this one stops. Run each --instance once"
                )
            raise KafkaUnavailableError(f"{self.group}: consume failed: {error}")
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise ProcessorError(f"{self.group}: the client returned a record with no position")
        timestamp = message.timestamp()[1]
        record = SourceRecord(topic, partition, offset, timestamp, message.key(), message.value())
        outputs = self.job.handle(record, int(self.clock() * 1000))
        batch.outputs += outputs
        batch.positions[(topic, partition)] = offset + 1
        batch.records += 1
        if batch.oldest_timestamp_ms is None or timestamp < batch.oldest_timestamp_ms:
            batch.oldest_timestamp_ms = timestamp
        self.metrics.count(1, len(outputs))

    def _tick(self, batch: _Batch) -> None:
        every = self.job.punctuate_every_ms
        now = time.monotonic()
        if every is None or now < self._next_tick:
            return
        self._next_tick = now + every / 1000
        batch.outputs += self.job.punctuate(int(self.clock() * 1000))

    def _commit(self, batch: _Batch) -> None:
        if not batch.outputs and not batch.positions:
            return
        consumer, producer = self._clients()
        try:
            producer.begin_transaction()
            for out in batch.outputs:
                self._produce(producer, out)
            offsets = [TopicPartition(t, p, o) for (t, p), o in batch.positions.items()]
            self._finish(producer, offsets, consumer.consumer_group_metadata())
            self.metrics.committed(batch.oldest_timestamp_ms, int(time.time() * 1000))
        except KafkaException as exc:
            self._running = False
            error = exc.args[0]
            if error.code() in _FENCED:
                raise ProcessorFencedError(
                    f"{self.group}-{self.config.instance}: fenced by a newer instance with the "
                    f"same id ({error}); this one stops. Run each --instance once"
                ) from exc
            raise TransactionAbortedError(
                f"{self.group}: the transaction did not commit ({error}); its records are "
                "fetched again and the store is restored from what did commit"
            ) from exc

    def _finish(self, producer: Producer, offsets: list[TopicPartition], group: Any) -> None:
        """Add the offsets to the transaction and commit it, bounded in time.

        librdkafka can block in ``send_offsets_to_transaction`` past its timeout when the group
        coordinator restarted (confluentinc/librdkafka#5456 and #5511, open in 2.16): a broker
        restart left the processor waiting forever, silently. The calls run on a worker thread;
        if they have not returned within ``finish_timeout_s`` the producer is abandoned
        (wedged), the run ends with a TransactionAbortedError, and the runner starts the engine
        again: its new producer takes the same transactional id, which fences the wedged one
        and aborts its transaction, so nothing is committed twice.
        """

        def finish() -> None:
            if offsets:
                producer.send_offsets_to_transaction(offsets, group, self.config.call_timeout_s)
            producer.commit_transaction(self.config.call_timeout_s)

        if self._worker is None:
            raise ProcessorError(f"{self.group}: the engine is not started; call start() first")
        future = self._worker.submit(finish)
        try:
            future.result(timeout=self.config.finish_timeout_s)
        except FutureTimeout:
            self._wedged = True
            self._running = False
            raise TransactionAbortedError(
                f"{self.group}: the transaction did not finish within "
                f"{self.config.finish_timeout_s:.0f}s (librdkafka#5456: it can hang after a "
                "coordinator restart); the producer is replaced, the records are fetched "
                "again and the store is restored from what did commit"
            ) from None

    def _clients(self) -> tuple[Consumer, Producer]:
        if self._consumer is None or self._producer is None:
            raise ProcessorError(f"{self.group}: the engine is not started; call start() first")
        return self._consumer, self._producer

    def _produce(self, producer: Producer, out: OutRecord) -> None:
        kwargs: dict[str, Any] = {"key": out.key, "value": out.value}
        if out.partition is not None:
            kwargs["partition"] = out.partition
        if out.headers:
            kwargs["headers"] = list(out.headers)
        while True:
            try:
                producer.produce(out.topic, **kwargs)
                return
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries drain

    # -- rebalance -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        started = time.monotonic()
        restored = self.job.assigned(numbers, self.metrics.restoring, self._committed_of(consumer))
        self.metrics.restored(restored, time.monotonic() - started)
        self._assigned = list(partitions)

    @staticmethod
    def _committed_of(consumer: Consumer) -> Committed:
        def committed(tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
            return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, 15)}

        return committed

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.discarded(self._batch.records)
        self._batch = _Batch()  # see "A rebalance in the middle of a batch" above
        self.job.discard()
        self.job.revoked(sorted({tp.partition for tp in partitions}))
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned = [tp for tp in self._assigned if (tp.topic, tp.partition) not in gone]

    def _check_copartitioned(self) -> None:
        admin = TopicAdmin(self.cluster)
        live = admin.topic_partitions()
        names = list(self.job.copartitioned)
        missing = [name for name in names if name not in live]
        if missing:
            raise ProcessorError(
                f"{self.group}: topics {missing} do not exist; run `mesh topics ensure` first"
            )
        counts = {name: live[name] for name in names}
        self.job.store_partitions = counts[self.job.store_topic]
        if len(set(counts.values())) != 1:
            raise ProcessorError(
                f"{self.group}: inputs and store must be co-partitioned, but partition counts "
                f"differ: {counts}. Recreate the topics with one count (MESH_PARTITIONS)."
            )
