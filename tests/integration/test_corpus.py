"""Issue 15, hostile and broken input: the bad-input corpus (tests/corpus) produced raw onto
the processors' input topics and an agent's inbox. Every bad record ends in mesh.dlq.v1 with
the right reason code and its original bytes; no processor or sidecar loop stops; the valid
records around them are all processed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.keyfiles import control_signers, mesh_key
from mesh.adapters.policies import publish_policy
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.policies import FLEET
from mesh.domain.topics import DLQ, REGISTRY_EVENTS, TASKS, inbox_topic
from mesh.settings import Cluster, Settings
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine
from processors.state import StateProcessor
from sidecar.context import read_task_state
from tests.corpus import Case, bytes_cases, inbox_cases, signed_cases
from tests.integration.fleet import Sent, codec_for, produce, read_all
from tests.integration.test_sidecar import Mesh, _until

MAX_BYTES = 64 * 1024  # an oversize case still fits Kafka's own limit


@pytest.fixture
def small(settings: Settings) -> Settings:
    return settings.with_overrides(max_message_bytes=MAX_BYTES)


def letters(settings: Settings, codec: MessageCodec) -> list[dict[str, Any]]:
    return [
        codec.serde.decode(v).record for _, v, _ in read_all(settings, DLQ, settings.partitions)
    ]


def registration(codec: MessageCodec, key: AgentKey) -> bytes:
    body = {"agent_id": key.agent_id, "owner": "team", "version": "1",
            "public_key": key.public_bytes, "agent_card_json": "{}"}  # fmt: skip
    envelope = new_envelope(key.agent_id, "", recipient_kind=RecipientKind.BROADCAST)
    return codec.seal(envelope, "mesh.registry.AgentRegistered", body, key)


@pytest.fixture
def engines(
    small: Settings, topics: object
) -> Iterator[tuple[MessageCodec, list[threading.Thread]]]:
    codec, registry = codec_for(small)
    codec = MessageCodec(codec.serde, PublicKeys(), max_bytes=MAX_BYTES)
    cluster = Cluster.of(small)
    running = [
        Engine.keyed(RegistryProcessor(mesh_key(small)), cluster, codec),
        Engine.keyed(StateProcessor(), cluster, codec),
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=e.run, kwargs={"until": stop.is_set}) for e in running]
    for thread in threads:
        thread.start()
    try:
        yield codec, threads
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        registry.close()


def test_every_bad_record_on_a_processors_input_is_dead_lettered_and_the_rest_processed(
    small: Settings, engines: tuple[MessageCodec, list[threading.Thread]]
) -> None:
    codec, threads = engines
    cluster = Cluster.of(small)
    agent = AgentKey.generate("corpus-agent")
    produce(small, [Sent(REGISTRY_EVENTS, agent.agent_id, registration(codec, agent))])
    beat = {"agent_id": agent.agent_id, "instance_id": "i", "sequence": 1}
    task = {"task_id": "t-corpus", "kind": "REQUESTED", "actor": agent.agent_id,
            "target": None, "capability": "work", "summary": "corpus", "artifact_uris": [],
            "value_usd": None}  # fmt: skip

    def sealed(subject: str, body: dict[str, Any], key: str | None = None) -> bytes:
        envelope = new_envelope(agent.agent_id, "", recipient_kind=RecipientKind.BROADCAST,
                                task_id=key)  # fmt: skip
        return codec.seal(envelope, subject, body, agent)

    good_beat = sealed("mesh.registry.Heartbeat", beat)
    good_task = sealed("mesh.tasks.TaskEvent", task, "t-corpus")
    cases: dict[str, list[Case]] = {
        REGISTRY_EVENTS: bytes_cases(codec, good_beat, MAX_BYTES)
        + signed_cases(codec, agent, "mesh.registry.Heartbeat", beat),
        TASKS: bytes_cases(codec, good_task, MAX_BYTES)
        + signed_cases(codec, agent, "mesh.tasks.TaskEvent", task),
    }
    _until_sync(
        lambda: "corpus-agent" in read_agents(cluster, codec.serde), "the agent registered", 60
    )
    records = []
    for topic, bad in cases.items():
        good = good_beat if topic == REGISTRY_EVENTS else good_task
        key = agent.agent_id if topic == REGISTRY_EVENTS else "t-corpus"
        records += [Sent(topic, key, good)]
        records += [Sent(topic, c.key if topic == REGISTRY_EVENTS and c.key else key, c.value)
                    for c in bad]  # fmt: skip
        records += [Sent(topic, key, good)]
    produce(small, records)
    expected = sum(len(bad) for bad in cases.values())
    _until_sync(lambda: len(letters(small, codec)) >= expected, "every bad record refused", 90)
    time.sleep(1)  # nothing more arrives
    found = letters(small, codec)
    by_original = {(d["source_topic"], bytes(d["original"])): d for d in found}
    assert len(found) == expected, [d["reason"] for d in found]
    for topic, bad in cases.items():
        for case in bad:
            letter = by_original.get((f"{small.topic_prefix}{topic}", case.value))
            assert letter is not None, f"{topic}: {case.name} was not dead-lettered"
            assert letter["reason_code"] in case.codes, (topic, case.name, letter["reason"])
    assert all(thread.is_alive() for thread in threads)  # no processor stopped
    record = read_agents(cluster, codec.serde)["corpus-agent"]
    assert record.last_heartbeat_ms is not None  # the valid heartbeats counted
    state = asyncio.run(read_task_state(cluster, codec.serde, "t-corpus", small.partitions))
    assert state is not None and state["task_id"] == "t-corpus"  # the valid task events folded


async def test_every_bad_message_in_an_inbox_is_dead_lettered_and_the_rest_delivered(
    small: Settings, engines: tuple[MessageCodec, list[threading.Thread]]
) -> None:
    codec, _ = engines
    publish_policy(Cluster.of(small), codec, control_signers(small), FLEET, {}, "everyone")
    mesh = Mesh(small, codec)
    async with mesh.sidecar("alice") as alice, mesh.sidecar("bob") as bob:
        await _until(lambda: bob.plane.keys.get("alice") is not None, "alice's key", 30)
        body = {"role": "AGENT", "parts": [{"kind": "TEXT", "text": "x"}], "metadata": {}}
        good = codec.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", body, alice.key)
        bad = (
            bytes_cases(codec, good, MAX_BYTES)
            + signed_cases(codec, alice.key, "mesh.a2a.Message", body, "bob", RecipientKind.AGENT)
            + inbox_cases(codec, alice.key, "bob", small.max_clock_skew_ms)
        )
        inbox = inbox_topic("bob").name
        before = await alice.send("bob", text="before")
        produce(small, [Sent(inbox, "k", c.value) for c in bad])
        after = await alice.send("bob", text="after")
        got = [await bob.receive(timeout_s=15) for _ in range(2)]
        assert [g.message_id for g in got if g] == [before, after]
        await _until(lambda: bob.counters.dead_lettered == len(bad), "every refusal", 30)
        assert bob.supervisor.restarts == {} and await bob.receive(timeout_s=0.5) is None
    found = {bytes(d["original"]): d for d in letters(small, codec)
             if d["source_topic"].endswith(inbox)}  # fmt: skip
    for case in bad:
        letter = found.get(case.value)
        assert letter is not None, f"{case.name} was not dead-lettered"
        assert letter["reason_code"] in case.codes, (case.name, letter["reason"])


def _until_sync(condition: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
