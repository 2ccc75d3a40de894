"""The audit log on the real broker: a SIGKILL mid-stream, verification, and tampering."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer, TopicPartition

from mesh.adapters.audit.log import AuditLog
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.kafka.reading import reader, watermarks
from mesh.adapters.keyfiles import mesh_key
from mesh.adapters.serde.codec import Serde
from mesh.domain.audit.chain import AUDIT_SUBJECT, Link, next_link
from mesh.domain.topics import AUDIT, CONTROL, REGISTRY_EVENTS, TASKS, TELEMETRY, inbox_topic
from mesh.settings import Cluster, Settings
from processors.audit import AuditProcessor
from processors.runtime.engine import Engine
from tests.integration.fleet import (
    Sent,
    codec_for,
    committed_total,
    produce,
    running,
    spawn_processor,
    wait_for,
)
from tests.integration.test_cli import run

SOURCES = [REGISTRY_EVENTS, TASKS, TELEMETRY, CONTROL, "mesh.inbox.research.v1"]


def mixed_events(total: int) -> list[Sent]:
    """``total`` records over every audited topic; a few are not even Avro (audited too)."""
    return [
        Sent(SOURCES[i % len(SOURCES)], f"key-{i % 40}", b"\x01junk" if i % 97 == 0 else
             f"event {i}".encode() * (1 + i % 5))
        for i in range(total)
    ]  # fmt: skip


def ensure_all(settings: Settings) -> TopicAdmin:
    admin = TopicAdmin(Cluster.of(settings))
    admin.ensure()
    admin.ensure([inbox_topic("research")])
    return admin


def source_coordinates(settings: Settings) -> set[tuple[str, int, int]]:
    """Every (topic, partition, offset) the sources hold (all written without transactions)."""
    consumer = reader(Cluster.of(settings))
    try:
        found = set()
        for topic in SOURCES:
            full = f"{settings.topic_prefix}{topic}"
            for partition in range(settings.partitions):
                low, high = watermarks(consumer, TopicPartition(full, partition))
                found |= {(full, partition, offset) for offset in range(low, high)}
        return found
    finally:
        consumer.close()


def audited(settings: Settings, serde: Serde) -> list[tuple[int, int, Link | None]]:
    log = AuditLog(Cluster.of(settings), serde)
    return [
        (partition, entry.offset, entry.link)
        for partition in log.partitions()
        for entry in log.entries(partition)
    ]


def test_sigkill_mid_stream_leaves_a_chain_that_verifies_with_each_record_once(
    settings: Settings,
) -> None:
    ensure_all(settings)
    codec, registry = codec_for(settings)
    events = mixed_events(5_000)
    produce(settings, events[:2_500])

    # The second half trickles in while the first instance runs, so the kill lands mid-stream
    # however fast the processor is on this machine.
    def second_half() -> None:
        for i in range(2_500, 5_000, 100):
            produce(settings, events[i : i + 100])
            time.sleep(0.1)

    trickle = threading.Thread(target=second_half)
    group = f"{settings.topic_prefix}mesh-audit"
    full = [f"{settings.topic_prefix}{t}" for t in SOURCES]

    def count() -> int:
        return committed_total(settings, group, SOURCES, settings.partitions)

    first = spawn_processor(settings, "audit")
    try:
        wait_for(lambda: count() > 0, 120, "the first audit instance to start")
        trickle.start()
        wait_for(lambda: count() > 2_600, 120, "the first audit instance to commit some work")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
        first.communicate()
    done_before_kill = count()
    trickle.join()
    assert done_before_kill < 5_000, "the kill must land mid-stream"

    second = spawn_processor(settings, "audit")
    try:
        wait_for(lambda: count() == 5_000, 180, "the restarted audit instance to finish")
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output

    records = audited(settings, codec.serde)
    links = [link for _, _, link in records if link is not None]
    assert len(links) == len(records)
    coordinates = Counter((x.source_topic, x.source_partition, x.source_offset) for x in links)
    assert [c for c, n in coordinates.items() if n > 1] == []
    assert set(coordinates) == source_coordinates(settings)
    assert {x.source_topic for x in links} == set(full)

    verified = run(["audit", "verify"], settings)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "every chain verifies" in verified.stdout
    assert "5000 records checked" in verified.stdout
    verdict = json.loads(run(["audit", "verify", "--json"], settings).stdout)
    assert verdict["ok"] and verdict["records"] == 5000 and verdict["problems"] == []
    registry.close()


@pytest.fixture
def chain(settings: Settings) -> Iterator[tuple[Serde, list[tuple[int, int, Link | None]]]]:
    """A short real chain, written by the audit processor from 300 source records."""
    ensure_all(settings)
    codec, registry = codec_for(settings)
    produce(settings, mixed_events(300))
    bootstrap = settings.bootstrap_servers or ""
    engine = Engine.keyed(AuditProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec)
    group = engine.group
    with running([engine]):
        wait_for(
            lambda: committed_total(settings, group, SOURCES, settings.partitions) == 300,
            120,
            "the audit processor",
        )
    records = audited(settings, codec.serde)
    yield codec.serde, records
    registry.close()


def copy_with(settings: Settings, serde: Serde, links: list[Link], name: str) -> Settings:
    """Write ``links`` as audit partition 0 of a fresh prefix, as a tamperer would."""
    copy = settings.with_overrides(topic_prefix=f"{settings.topic_prefix}{name}.")
    TopicAdmin(Cluster.of(copy)).ensure()
    codec, registry = codec_for(copy)  # the copy's own schema registry
    serde = codec.serde
    producer = Producer(producer_config(Cluster.of(copy)))
    for link in links:
        value = serde.encode(AUDIT_SUBJECT, link.to_record())
        producer.produce(f"{copy.topic_prefix}{AUDIT}", value, b"k", partition=0)
    assert producer.flush(30) == 0
    registry.close()
    return copy


def test_altering_deleting_reordering_and_injecting_are_named(
    settings: Settings, chain: tuple[Serde, list[tuple[int, int, Link | None]]]
) -> None:
    serde, records = chain
    links = [link for partition, _, link in records if partition == 0 and link is not None]
    assert len(links) > 20
    intact = copy_with(settings, serde, links, "intact")
    assert run(["audit", "verify"], intact).returncode == 0

    altered = list(links)
    altered[7] = altered[7]._replace(original=b"what really happened")
    deleted = links[:9] + links[10:]
    reordered = list(links)
    reordered[12], reordered[13] = reordered[13], reordered[12]
    cases = {
        "altered": (altered, "offset 7, sequence 7: altered: the original bytes do not match"),
        "deleted": (deleted, "offset 9, sequence 10: missing record: the chain jumps from 8 to 10"),
        "reordered": (reordered, "offset 12, sequence 13: reordered: sequence 13 comes before 12"),
    }
    for name, (tampered, named) in cases.items():
        copied = copy_with(settings, serde, tampered, name)
        result = run(["audit", "verify"], copied)
        assert result.returncode == 1, (name, result.stdout)
        assert f"first bad record: audit partition 0, {named}" in result.stdout.replace(
            "sequence 13 comes before sequence 12", "sequence 13 comes before 12"
        ), (name, result.stdout)
        verdict = run(["audit", "verify", "--json"], copied)  # the same, for a script
        assert verdict.returncode == 1
        found = json.loads(verdict.stdout)
        assert not found["ok"] and found["first_bad_record"].startswith("audit partition 0")

    injected = copy_with(settings, serde, links, "injected")
    producer = Producer(producer_config(Cluster.of(injected)))
    producer.produce(
        f"{injected.topic_prefix}{AUDIT}", b"\x00\x00\x00\x00\x01not audit", partition=0
    )
    assert producer.flush(30) == 0
    result = run(["audit", "verify"], injected)
    assert result.returncode == 1
    assert f"audit partition 0, offset {len(links)}: not an audit record" in result.stdout


def test_agents_attaching_mid_stream_never_fork_a_chain(settings: Settings) -> None:
    """Each new inbox matches the audit's subscription, so each one is a rebalance mid-stream.

    A rebalance inside a batch must not commit the batch's links on top of the ones rebuilt
    from the restored heads, and the restored heads must include the commit just before it.
    The stream runs without pause so that rebalances land while the processor is busy.
    """
    ensure_all(settings)
    admin = TopicAdmin(Cluster.of(settings))
    codec, registry = codec_for(settings)
    bootstrap = settings.bootstrap_servers or ""
    engine = Engine.keyed(AuditProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec)
    inboxes = [f"agent-{i}" for i in range(5)]
    events = mixed_events(6_000)
    for i, agent in enumerate(inboxes, start=1):  # after its inbox exists (see below)
        events[i * 1_000] = Sent(f"mesh.inbox.{agent}.v1", "k", b"first in a new inbox")

    def stream() -> None:
        producer = Producer(producer_config(Cluster(settings, bootstrap)))
        for i, event in enumerate(events):
            if i % 1_000 == 0 and i:
                admin.ensure([inbox_topic(inboxes[i // 1_000 - 1])])
            topic = f"{settings.topic_prefix}{event.topic}"
            producer.produce(topic, event.value, event.key.encode())
            producer.poll(0)
            time.sleep(0.002)
        assert producer.flush(30) == 0

    topics = SOURCES + [f"mesh.inbox.{agent}.v1" for agent in inboxes]
    with running([engine]):
        stream()
        wait_for(
            lambda: committed_total(settings, engine.group, topics, settings.partitions) == 6_000,
            180,
            "the audit processor to take every record",
        )
    assert engine.metrics.assignments >= 3, "new inboxes must have rebalanced the audit"
    links = [link for _, _, link in audited(settings, codec.serde)]
    coordinates = Counter(
        (x.source_topic, x.source_partition, x.source_offset) for x in links if x is not None
    )
    assert len(links) == 6_000 and sorted(set(coordinates.values())) == [1]
    verified = run(["audit", "verify"], settings)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "6000 records checked" in verified.stdout
    registry.close()


def test_a_link_forged_while_the_audit_is_down_is_named_and_never_sealed(
    settings: Settings,
) -> None:
    """Issue 19: a well-formed link appended by someone else is not adopted on restore, not
    sealed by a checkpoint, and ``mesh audit verify`` names it."""
    ensure_all(settings)
    codec, registry = codec_for(settings)
    cluster = Cluster(settings, settings.bootstrap_servers or "")
    group = f"{settings.topic_prefix}mesh-audit"

    def audit_until(total: int) -> None:
        engine = Engine.keyed(AuditProcessor(mesh_key(settings), 200), cluster, codec)
        with running([engine]):
            wait_for(
                lambda: committed_total(settings, group, SOURCES, settings.partitions) == total,
                120,
                "the audit processor",
            )
            time.sleep(1.0)  # a checkpoint tick after the last batch

    produce(settings, mixed_events(200))
    audit_until(200)
    head = [link for p, _, link in audited(settings, codec.serde) if p == 0 and link][-1]
    forged = next_link(
        head, 0, head.source_topic, 0, head.source_offset + 10_000, 1, b"k", b"never happened"
    )
    producer = Producer(producer_config(cluster))
    value = codec.serde.encode(AUDIT_SUBJECT, forged.to_record())
    producer.produce(cluster.topic(AUDIT), value, b"k", partition=0)
    assert producer.flush(30) == 0

    produce(settings, mixed_events(400)[200:])
    audit_until(400)

    log = AuditLog(cluster, codec.serde)
    records = [(offset, link) for p, offset, link in audited(settings, codec.serde) if p == 0]
    links = [link for _, link in records if link is not None]
    at = next(offset for offset, link in records if link == forged)
    mine = [link for link in links if link.sequence == forged.sequence and link != forged]
    assert len(mine) == 1 and mine[0].prev_hash == head.record_hash  # carried on from its own
    seals = {(c.sequence, c.head_hash) for c in log.checkpoints(0)}
    assert all(hash_ != forged.record_hash for _, hash_ in seals)

    result = run(["audit", "verify"], settings)
    assert result.returncode == 1, result.stdout
    assert (
        f"foreign link: audit partition 0, offset {at}, sequence "
        f"{forged.sequence}: not written by the audit processor (unsigned"
    ) in result.stdout
    assert f"offset {forged.source_offset}, past the end of that partition" in result.stdout
    assert "first bad record" not in result.stdout  # the chain itself verifies past it
    registry.close()


def test_verify_complete_names_source_records_the_audit_missed(settings: Settings) -> None:
    """Issue 14: a sound chain is not a complete log. Records written while the audit
    processor is down are in no link; ``--complete`` names them, plain verify does not."""
    ensure_all(settings)
    codec, registry = codec_for(settings)
    produce(settings, mixed_events(60))
    engine = Engine.keyed(AuditProcessor(mesh_key(settings)), Cluster.of(settings), codec)
    group = engine.group
    with running([engine]):
        wait_for(
            lambda: committed_total(settings, group, SOURCES, settings.partitions) == 60,
            120,
            "the audit processor",
        )
    complete = run(["audit", "verify", "--complete"], settings)
    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert "complete: every record of" in complete.stdout

    produce(settings, [Sent(TASKS, "late", b"written while the audit was down")] * 3)
    sound = run(["audit", "verify"], settings)
    assert sound.returncode == 0, sound.stdout  # the chain itself is sound
    gap = run(["audit", "verify", "--complete"], settings)
    out = " ".join(gap.stdout.split())
    assert gap.returncode == 1, out
    assert "FAIL incomplete: 3 source records are not in the audit, first" in out
    assert f"{settings.topic_prefix}{TASKS}[" in out and "audit lag:" in out

    everything = run(["audit", "replay", "--from", "2000-01-01T00:00:00Z"], settings)
    assert everything.returncode == 0 and len(everything.stdout.splitlines()) == 60
    assert "# 60 records replayed" in everything.stderr
    nobody = run(["audit", "replay", "--agent", "nosuch"], settings)
    assert nobody.returncode == 1 and "no audit record concerns agent 'nosuch'" in nobody.stderr
    registry.close()
