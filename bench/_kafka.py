"""Kafka baselines shared by the benchmarks: fresh topics, bulk produce, a raw passthrough,
and interleaved rounds of contenders on the same input."""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import (
    consumer_config,
    producer_config,
    transactional_producer_config,
)
from mesh.adapters.kafka.source import acquire_broker
from mesh.adapters.keyfiles import control_signers
from mesh.adapters.policies import publish_policy
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import PublicKeys
from mesh.domain.policies import FLEET
from mesh.settings import Cluster, Settings, load_settings

Contender = Callable[[Settings], float]  # records/s on the topics of the given settings


@contextlib.contextmanager
def mesh_on_fresh_topics(tag: str, partitions: int) -> Iterator[tuple[Settings, str, MessageCodec]]:
    """The broker (``MESH_BOOTSTRAP_SERVERS`` or the local one), a fresh topic prefix with the
    catalogue's topics, every schema registered, a throwaway state directory (agent, mesh and
    operator keys made for the run), and an operator's fleet policy in force (``{}``: the
    defaults; production denies without one); yields (settings, bootstrap, codec)."""
    base = load_settings().with_overrides(
        partitions=partitions, state_dir=Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    )
    lease = acquire_broker(base)
    settings = fresh_topics(base, lease.bootstrap, tag)
    registry = KafkaRegistry(Cluster(settings, lease.bootstrap))
    try:
        serde = Serde(registry)
        serde.register_all()
        codec = MessageCodec(serde, PublicKeys())
        cluster = Cluster(settings, lease.bootstrap)
        publish_policy(cluster, codec, control_signers(settings), FLEET, {}, "benchmark")
        yield settings, lease.bootstrap, codec
    finally:
        registry.close()
        lease.release()


def fresh_topics(settings: Settings, bootstrap: str, tag: str) -> Settings:
    """``settings`` with a new topic prefix whose catalogue topics exist."""
    prefixed = settings.with_overrides(topic_prefix=f"bench.{tag}.{uuid.uuid4().hex[:8]}.")
    TopicAdmin(Cluster(prefixed, bootstrap)).ensure()
    return prefixed


def interleaved_rounds(
    base: Settings,
    bootstrap: str,
    tag: str,
    rounds: int,
    fill: Callable[[Settings], None],
    contenders: dict[str, Contender],
) -> tuple[dict[str, list[float]], Settings]:
    """Each contender once per round, in turn, each on fresh topics given the same input (so
    noise on a shared machine hits all alike); returns the rates and the last run's settings."""
    rates: dict[str, list[float]] = {}
    last = base
    for round_ in range(rounds):
        for name, run in contenders.items():
            last = fresh_topics(base, bootstrap, tag)
            fill(last)
            rates.setdefault(name, []).append(run(last))
            print(f"round {round_ + 1} {name}: {rates[name][-1]:,.0f} records/s")
    return rates, last


def produce(
    settings: Settings, bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]
) -> None:
    """Produce ``events`` (key, value) to the prefixed ``topic`` and wait for every ack."""
    producer = Producer(producer_config(Cluster(settings, bootstrap)))
    full = f"{settings.topic_prefix}{topic}"
    for key, value in events:
        while True:
            try:
                producer.produce(full, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def passthrough(
    settings: Settings, bootstrap: str, sources: list[str], total: int, transactional: bool
) -> float:
    """Records/s of a raw consume -> produce copy of ``sources`` to the telemetry topic's
    partitions (no decoding), first record to last. Transactional: commits every 20 ms with
    ``send_offsets_to_transaction``, as the processors do; else offsets every 500 records."""
    topics = [f"{settings.topic_prefix}{t}" for t in sources]
    sink = f"{settings.topic_prefix}mesh.telemetry.v1"
    group = f"{settings.topic_prefix}passthrough"
    consumer = Consumer(consumer_config(Cluster(settings, bootstrap), group))
    if transactional:
        producer = Producer(transactional_producer_config(Cluster(settings, bootstrap), group))
        producer.init_transactions(30)
    else:
        producer = Producer(producer_config(Cluster(settings, bootstrap)))
    consumer.subscribe(topics)
    done, started, last_commit = 0, 0.0, time.monotonic()
    positions: dict[tuple[str, int], int] = {}
    if transactional:
        producer.begin_transaction()
    while done < total:
        for message in consumer.consume(500, 0.05):
            if message.error():
                continue
            started = started or time.perf_counter()
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            producer.produce(sink, message.value(), message.key(), partition=partition)
            positions[(topic, partition)] = offset + 1
            done += 1
        if transactional and time.monotonic() - last_commit >= 0.02 and positions:
            _commit_txn(producer, consumer, positions)
            producer.begin_transaction()
            last_commit = time.monotonic()
        elif not transactional and done % 500 == 0 and positions:
            producer.poll(0)
            consumer.commit(asynchronous=True)
    if transactional:
        _commit_txn(producer, consumer, positions)
    else:
        producer.flush(60)
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed


def _commit_txn(
    producer: Producer, consumer: Consumer, positions: dict[tuple[str, int], int]
) -> None:
    offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
    producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
    producer.commit_transaction()
