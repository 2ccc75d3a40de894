"""The exactly-once runtime on the real broker: crashes, rebalances, dead letters."""

import os
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.keyfiles import mesh_key
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import AgentKey
from mesh.domain.topics import DLQ, REGISTRY, REGISTRY_EVENTS
from mesh.settings import Cluster, Settings
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine
from processors.testing import TestDriver
from tests.integration.fleet import (
    Sent,
    codec_for,
    committed,
    produce,
    read_all,
    registry_events,
    spawn_processor,
    wait_for,
)

GROUP_SUFFIX = "mesh-registry"


@pytest.fixture
def codec(settings: Settings, topics: TopicAdmin) -> Iterator[MessageCodec]:
    codec, registry = codec_for(settings)
    yield codec
    registry.close()


def reference(
    events: list[Sent], partitions: int, codec: MessageCodec, settings: Settings
) -> dict[str, list[dict]]:
    """What an uncrashed run outputs, per agent, computed with the test driver."""
    driver = TestDriver(
        RegistryProcessor(mesh_key(settings)), partitions=partitions, serde=codec.serde
    )
    for event in events:
        driver.pipe(event.topic, event.key, event.value)
    out: dict[str, list[dict]] = defaultdict(list)
    for key, record in driver.read(REGISTRY):
        out[key].append(record)
    return out


def actual(settings: Settings, codec: MessageCodec) -> tuple[dict[str, list[dict]], list[bytes]]:
    out: dict[str, list[dict]] = defaultdict(list)
    sources = []
    for key, value, headers in read_all(settings, REGISTRY, settings.partitions):
        out[key.decode()].append(codec.serde.decode(value).record)
        sources.append(headers.get("mesh-source", b""))
    return out, sources


def assert_same_history(outputs: dict[str, list[dict]], expected: dict[str, list[dict]]) -> None:
    """Per agent, the records written are states the uncrashed run went through, in its order,
    none twice, ending in the same final state. A transaction writes each changed agent once
    (its last state in the batch), so how many intermediate states show depends on batching;
    a lost event changes the final state, a replayed one repeats a state or goes back."""
    assert set(outputs) == set(expected)
    for agent, written in outputs.items():
        states = iter(expected[agent])
        assert all(any(s == w for s in states) for w in written), f"{agent}: out of order"
        assert written[-1] == expected[agent][-1], f"{agent}: a different final state"


def future_base_ms() -> int:
    # Event times an hour ahead, so no agent goes stale (a wall-clock rule) during the test.
    return int(time.time() * 1000) + 3_600_000


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    settings: Settings, codec: MessageCodec
) -> None:
    events = registry_events(codec, agents=200, total=10_000, base_ms=future_base_ms())
    produce(settings, events)
    group = f"{settings.topic_prefix}{GROUP_SUFFIX}"

    first = spawn_processor(settings, "registry")
    try:
        wait_for(
            lambda: committed(settings, group, REGISTRY_EVENTS, settings.partitions) > 2_000,
            120,
            "the first instance to commit some work",
        )
        done_before_kill = committed(settings, group, REGISTRY_EVENTS, settings.partitions)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
        first.communicate()
    assert done_before_kill < 10_000, "the kill must land mid-stream"

    second = spawn_processor(settings, "registry")
    try:
        wait_for(
            lambda: committed(settings, group, REGISTRY_EVENTS, settings.partitions) == 10_000,
            180,
            "the restarted instance to finish",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output
    assert "stopped cleanly" in output

    outputs, sources = actual(settings, codec)
    expected = reference(events, settings.partitions, codec, settings)
    assert len(expected) == 200 and sum(map(len, expected.values())) > 9_000
    assert_same_history(outputs, expected)
    duplicated = [s for s, n in Counter(sources).items() if n > 1]
    assert duplicated == []
    assert read_all(settings, DLQ, settings.partitions) == []


def test_two_instances_share_the_work_and_survive_one_leaving(
    settings: Settings, codec: MessageCodec
) -> None:
    events = registry_events(codec, agents=60, total=3_000, base_ms=future_base_ms())
    group = f"{settings.topic_prefix}{GROUP_SUFFIX}"
    instances = [spawn_processor(settings, "registry", str(i)) for i in range(2)]
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    try:

        def both_members() -> bool:
            description = admin.describe_consumer_groups([group])[group].result()
            return len(description.members) == 2 and all(
                m.assignment.topic_partitions for m in description.members
            )

        wait_for(both_members, 90, "both instances to hold partitions")
        produce(settings, events[:1_500])
        wait_for(
            lambda: committed(settings, group, REGISTRY_EVENTS, settings.partitions) == 1_500,
            120,
            "the first half",
        )
        instances[1].send_signal(signal.SIGTERM)
        instances[1].communicate(timeout=60)
        produce(settings, events[1_500:])
        wait_for(
            lambda: committed(settings, group, REGISTRY_EVENTS, settings.partitions) == 3_000,
            120,
            "the survivor to take over and finish",
        )
    finally:
        for process in instances:
            process.send_signal(signal.SIGTERM)
        for process in instances:
            process.communicate(timeout=60)
    outputs, sources = actual(settings, codec)
    assert_same_history(outputs, reference(events, settings.partitions, codec, settings))
    assert len(sources) == len(set(sources))


def test_dead_letters_keep_the_original_bytes(settings: Settings, codec: MessageCodec) -> None:
    agent = AgentKey.generate("agent-x")
    good = registry_events(codec, agents=1, total=1, base_ms=future_base_ms())[0]
    forged = registry_events(codec, agents=1, total=1, base_ms=future_base_ms())[0]
    garbage = b"\x00\x00\x01\x00\x00not avro"
    produce(
        settings,
        [
            good,
            Sent(REGISTRY_EVENTS, good.key, forged.value),
            Sent(REGISTRY_EVENTS, agent.agent_id, garbage),
        ],
    )

    engine = Engine.keyed(RegistryProcessor(mesh_key(settings)), Cluster.of(settings), codec)
    thread = threading.Thread(
        target=engine.run, kwargs={"until": lambda: engine.metrics.records_in >= 3}
    )
    thread.start()
    thread.join(120)
    assert not thread.is_alive()

    letters = [
        codec.serde.decode(value).record
        for _, value, _ in read_all(settings, DLQ, settings.partitions)
    ]
    by_code = {letter["reason_code"]: letter for letter in letters}
    assert set(by_code) == {"registration_conflict", "unknown_schema_id"}
    assert by_code["registration_conflict"]["original"] == forged.value
    assert by_code["unknown_schema_id"]["original"] == garbage
    assert (
        by_code["unknown_schema_id"]["source_topic"] == f"{settings.topic_prefix}{REGISTRY_EVENTS}"
    )
    assert by_code["unknown_schema_id"]["source_key"] == b"agent-x"
    assert by_code["unknown_schema_id"]["source_offset"] is not None
