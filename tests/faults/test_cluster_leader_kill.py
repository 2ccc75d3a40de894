"""Issue 15: on a three-broker cluster, the broker leading audit and inbox partitions is killed
(SIGKILL) while a fleet sends under load, and stays down.

* processing continues after leader election: messages sent after the kill are delivered,
  and the audit records them;
* every message sent was delivered exactly once (no message id twice, none missing);
* every audit chain verifies, and it is complete: one link per record of every audited topic;
* the counts match: the inbox topics hold as many records as the agents sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import base_config
from mesh.adapters.kafka.reading import reader, watermarks
from mesh.domain.topics import AUDIT, inbox_topic
from mesh.errors import MeshError
from mesh.settings import Cluster, Settings
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec
from tests.faults.conftest import OwnCluster
from tests.faults.processes import Watched
from tests.integration.fleet import codec_for, committed
from tests.integration.test_cli import run

pytestmark = pytest.mark.timeout(900)

PAIRS = {"alice": "bob", "carol": "dave"}  # sender -> receiver
PER_SENDER = 500
INTERVAL_S = 0.05  # each sender: 20 messages a second, for 25 s
KILL_AFTER = 150  # messages per sender before the kill


@dataclass
class Load:
    sent: dict[str, int] = field(default_factory=dict)  # message id -> sequence
    sent_at: dict[str, float] = field(default_factory=dict)
    retried: int = 0  # sends that raised and were made again (a new message)
    delivered: Counter[str] = field(default_factory=Counter)
    delivered_at: dict[str, float] = field(default_factory=dict)


def leaders(settings: Settings, topic: str) -> dict[int, int]:
    """partition -> id of the broker leading it."""
    admin = AdminClient(base_config(Cluster.of(settings)))
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: m.leader for p, m in metadata.partitions.items()}


def victim(settings: Settings) -> int:
    """The broker that leads the most audit and receiver-inbox partitions (at least one of
    each)."""
    audit = leaders(settings, Cluster.of(settings).topic(AUDIT))
    inboxes = [
        leaders(settings, Cluster.of(settings).topic(inbox_topic(r).name)) for r in PAIRS.values()
    ]
    score: Counter[int] = Counter(audit.values())
    for inbox in inboxes:
        score.update(inbox.values())
    candidates = [b for b in score if b in audit.values() and any(b in i.values() for i in inboxes)]
    assert candidates, (audit, inboxes)
    return max(candidates, key=lambda b: score[b])


def audit_caught_up(settings: Settings, topics: list[str]) -> bool:
    """The audit group has committed every record of ``topics`` (short names)."""
    consumer = reader(Cluster.of(settings))
    try:
        for topic in topics:
            full = Cluster.of(settings).topic(topic)
            ends = sum(
                watermarks(consumer, TopicPartition(full, p))[1] for p in range(settings.partitions)
            )
            done = committed(
                settings, f"{settings.topic_prefix}mesh-audit", topic, settings.partitions
            )
            if done < ends:
                return False
        return True
    finally:
        consumer.close()


def inbox_records(settings: Settings, agent: str) -> int:
    consumer = reader(Cluster.of(settings))
    try:
        full = Cluster.of(settings).topic(inbox_topic(agent).name)
        return sum(
            high - low
            for low, high in (
                watermarks(consumer, TopicPartition(full, p)) for p in range(settings.partitions)
            )
        )
    finally:
        consumer.close()


async def send_all(sender: Sidecar, to: str, load: Load, killed: asyncio.Event) -> None:
    for seq in range(PER_SENDER):
        if seq == KILL_AFTER:
            killed.set()
        began = time.monotonic()  # delivery is timed from the first attempt to send
        while True:
            try:
                message_id = await sender.send(to, data={"seq": seq})
                break
            except MeshError:  # the leader moved under a send: make it again, as an agent would
                load.retried += 1
                await asyncio.sleep(0.2)
        load.sent[message_id] = seq
        load.sent_at[message_id] = began
        await asyncio.sleep(INTERVAL_S)


async def drain(receiver: Sidecar, load: Load, stop: asyncio.Event) -> None:
    while not stop.is_set():
        delivery = await receiver.receive(timeout_s=0.5)
        if delivery is not None:
            load.delivered[delivery.message_id] += 1
            load.delivered_at.setdefault(delivery.message_id, time.monotonic())


async def test_a_cluster_loses_the_leader_of_audit_and_inboxes_under_load(
    own_cluster: OwnCluster,
) -> None:
    settings = own_cluster.settings
    admin = TopicAdmin(Cluster.of(settings))
    admin.ensure()
    admin.ensure([inbox_topic(agent) for agent in PAIRS.values()])
    codec, registry = codec_for(settings)  # open while the sidecars use it
    processors = [Watched(settings, "registry"), Watched(settings, "audit")]
    cluster = Cluster.of(settings.with_overrides(profile="development"))
    fleet = {
        name: Sidecar(cluster, codec.serde, AgentSpec(name), heartbeat_s=1.0, key_wait_s=10.0)
        for name in [*PAIRS, *PAIRS.values()]
    }
    load, stop, killed = Load(), asyncio.Event(), asyncio.Event()
    try:
        for process in processors:
            process.ready_after_s(120)
        await asyncio.gather(*(sidecar.start() for sidecar in fleet.values()))
        deadline = time.monotonic() + 60
        while not all(set(fleet) <= set(s.agents()) for s in fleet.values()):
            assert time.monotonic() < deadline, "the fleet did not see itself registered"
            await asyncio.sleep(0.1)

        drains = [asyncio.create_task(drain(fleet[r], load, stop)) for r in PAIRS.values()]
        sends = [asyncio.create_task(send_all(fleet[s], r, load, killed)) for s, r in PAIRS.items()]
        await killed.wait()
        broker = await asyncio.to_thread(victim, settings)
        await asyncio.to_thread(own_cluster.kafka.node(broker).kill)
        killed_at = time.monotonic()
        await asyncio.gather(*sends)

        total = len(PAIRS) * PER_SENDER
        deadline = time.monotonic() + 180
        while len(load.delivered) < total and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*drains)

        # processing continued after leader election: messages sent after the kill arrived
        after = [at for at in load.delivered_at.values() if at > killed_at]
        assert after, "nothing was delivered after the kill"
        # exactly once: every message sent delivered, none twice, nothing unknown
        assert len(load.sent) == total
        assert [m for m, n in load.delivered.items() if n > 1] == []
        assert set(load.delivered) == set(load.sent), (
            f"missing {len(set(load.sent) - set(load.delivered))}, "
            f"unknown {len(set(load.delivered) - set(load.sent))}"
        )
        # the counts match: each inbox holds what was sent to it, plus any retried send
        # that had in fact been written (the agent could not know; the inbox skipped none)
        written = 0
        for receiver in PAIRS.values():
            written += await asyncio.to_thread(inbox_records, settings, receiver)
        assert total <= written <= total + load.retried, (written, total, load.retried)

        inboxes = [inbox_topic(r).name for r in PAIRS.values()]
        deadline = time.monotonic() + 180
        while not await asyncio.to_thread(audit_caught_up, settings, inboxes):
            for process in processors:
                assert process.process.poll() is None, f"a processor exited:\n{process.output()}"
            assert time.monotonic() < deadline, processors[1].output()[-3000:]
            await asyncio.sleep(0.5)
        for process in processors:  # they carried on by themselves
            assert process.process.poll() is None, process.output()
    finally:
        stop.set()
        await asyncio.gather(*(sidecar.stop() for sidecar in fleet.values()))
        codes = [process.stop() for process in processors]
        registry.close()
    assert codes == [0, 0], [p.output()[-2000:] for p in processors]

    verified = await asyncio.to_thread(run, ["audit", "verify", "--complete"], settings)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "complete: every record of" in verified.stdout
    waits = sorted(load.delivered_at[m] - load.sent_at[m] for m in load.sent)
    print(
        f"\nkilled broker {broker}; sent {total}, delivered {len(load.delivered)} once each, "
        f"{load.retried} sends retried, {written} inbox records, {len(after)} delivered after "
        f"the kill; from the first attempt to send to delivery: median "
        f"{waits[len(waits) // 2] * 1000:.0f} ms, longest {waits[-1]:.1f} s (across the "
        f"election)\n{verified.stdout}"
    )
