"""Helpers for processor integration tests: signed event streams, processes, offsets."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from mesh.adapters.kafka.config import consumer_config, producer_config
from mesh.adapters.kafka.reading import watermarks
from mesh.adapters.keyfiles import control_signers, mesh_key
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import REGISTRY_EVENTS
from mesh.settings import Cluster, Settings
from processors.killswitch import KillSwitchProcessor
from processors.killswitch.policy import parse_policy
from processors.runtime.engine import Engine, EngineConfig

CARD = json.dumps({"name": "worker", "skills": [{"id": "work", "name": "Work"}]})


@dataclass(frozen=True)
class Sent:
    topic: str
    key: str
    value: bytes


def registry_events(codec: MessageCodec, agents: int, total: int, base_ms: int) -> list[Sent]:
    """``total`` registry events: each agent registers, then heartbeats and changes its card."""
    keys = [AgentKey.generate(f"agent-{i:04d}") for i in range(agents)]
    events = []
    for i in range(total):
        key = keys[i % agents]
        at = base_ms + i
        if i < agents:
            subject, body = (
                "mesh.registry.AgentRegistered",
                {
                    "agent_id": key.agent_id,
                    "owner": "team",
                    "version": "1",
                    "public_key": key.public_bytes,
                    "agent_card_json": CARD,
                    "depends_on_agents": [keys[(i + 1) % agents].agent_id],
                },
            )
        elif i % 7 == 0:
            subject, body = (
                "mesh.registry.CapabilitiesChanged",
                {"agent_id": key.agent_id, "agent_card_json": json.dumps({"name": f"v{i}"})},
            )
        else:
            subject, body = (
                "mesh.registry.Heartbeat",
                {"agent_id": key.agent_id, "instance_id": "i", "sequence": i},
            )
        envelope = Envelope(f"m-{i}", "c", "c", key.agent_id, RecipientKind.BROADCAST, "", at)
        events.append(Sent(REGISTRY_EVENTS, key.agent_id, codec.seal(envelope, subject, body, key)))
    return events


def codec_for(settings: Settings) -> tuple[MessageCodec, KafkaRegistry]:
    registry = KafkaRegistry(Cluster.of(settings))
    serde = Serde(registry)
    serde.register_all()
    return MessageCodec(serde, PublicKeys()), registry


def produce(settings: Settings, events: list[Sent]) -> None:
    producer = Producer(producer_config(Cluster.of(settings)))
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for event in events:
        while True:
            try:
                producer.produce(
                    f"{settings.topic_prefix}{event.topic}",
                    event.value,
                    event.key.encode(),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0
    assert not failures, failures


def committed(settings: Settings, group: str, topic: str, partitions: int) -> int:
    """Sum of the group's committed offsets on ``topic`` (records it has fully processed).

    The probe reads ``read_uncommitted`` on purpose: librdkafka then fetches offsets without
    ``require_stable``, so a transaction left open by a SIGKILLed instance does not block the
    probe until it is fenced; only offsets of committed transactions are returned either way.
    """
    config = consumer_config(Cluster.of(settings), group)
    consumer = Consumer(config | {"isolation.level": "read_uncommitted"})
    try:
        tps = [TopicPartition(f"{settings.topic_prefix}{topic}", p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str, partitions: int) -> int:
    consumer = Consumer(consumer_config(Cluster.of(settings), "probe"))
    try:
        full = f"{settings.topic_prefix}{topic}"
        return sum(watermarks(consumer, TopicPartition(full, p))[1] for p in range(partitions))
    finally:
        consumer.close()


def spawn_processor(settings: Settings, name: str, instance: str = "0") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env |= {
        "MESH_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "MESH_TOPIC_PREFIX": settings.topic_prefix,
        "MESH_STATE_DIR": str(settings.state_dir),
        "MESH_PARTITIONS": str(settings.partitions),
        "MESH_REPLICATION_FACTOR": str(settings.replication_factor),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "processors", "run", name, "--instance", instance],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except KafkaException as error:  # a probe timing out while the group settles
            if error.args[0].code() != KafkaError._TIMED_OUT:
                raise
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def read_all(
    settings: Settings, topic: str, partitions: int
) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """Every committed record of ``topic`` (key, value, headers), partition by partition."""
    from confluent_kafka import OFFSET_BEGINNING

    from mesh.adapters.kafka.reading import read_to_end, reader

    consumer = reader(Cluster.of(settings))
    full = f"{settings.topic_prefix}{topic}"
    assigned = [TopicPartition(full, p, OFFSET_BEGINNING) for p in range(partitions)]
    consumer.assign(assigned)
    out: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    try:
        read_to_end(
            consumer,
            assigned,
            lambda m: out.append((m.key() or b"", m.value() or b"", dict(m.headers() or []))),
        )
    finally:
        consumer.close()
    return out


@contextlib.contextmanager
def running(engines: list[Any]) -> Iterator[None]:
    """Run engines in threads for the block; stop and join them after, re-raising failures."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def work(engine: Any) -> None:
        try:
            engine.run(until=stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    if failures:
        raise failures[0]


def committed_total(settings: Settings, group: str, topics: list[str], partitions: int) -> int:
    return sum(committed(settings, group, topic, partitions) for topic in topics)


def killswitch_engine(
    settings: Settings, codec: MessageCodec, policy: dict[str, Any], instance: str = "0"
) -> Engine:
    """A kill-switch as `mesh processors run killswitch --instance N` builds it, with ``policy``."""
    processor = KillSwitchProcessor(
        codec, mesh_key(settings), parse_policy(policy), control_signers(settings), instance
    )
    return Engine.keyed(processor, Cluster.of(settings), codec, EngineConfig(instance=instance))
