"""Time travel equals the live projection: ``rebuild_task`` folds the projection's own inputs
(task events and agent inboxes) through the same processor, judging senders by the registry
as it was, so it agrees with what ``mesh.state.v1`` holds, also after every agent retired."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.keyfiles import mesh_anchor, mesh_key
from mesh.domain.task_record import from_record
from mesh.domain.tasks import TaskState
from mesh.domain.topics import STATE
from mesh.settings import Cluster, Settings
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine
from processors.state import StateProcessor
from processors.state.rebuild import rebuild_task
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec
from tests.integration.fleet import codec_for, read_all, running, wait_for


def live(settings: Settings, codec: Any, task_id: str) -> TaskState | None:
    """The projection's current record of ``task_id`` (the last one on mesh.state.v1)."""
    found = None
    for key, value, _ in read_all(settings, STATE, settings.partitions):
        if key == task_id.encode() and value:
            found = from_record(codec.serde.decode(value).record)
    return found


def comparable(state: TaskState | None) -> dict[str, Any]:
    """What both must agree on. Versions count changes, which depend on how the inputs of one
    task interleaved when read; the content does not."""
    assert state is not None
    return {
        "status": state.status,
        "participants": sorted(state.participants),
        "handoffs": state.handoffs,
        "context": {k: (e.value_json, e.version, e.written_by) for k, e in state.context.items()},
        "artifacts": sorted(state.artifacts),
    }


async def exchange(settings: Settings, codec: Any) -> int:
    """Four agents work on t-1 (messages, events, context); returns a time between two acts."""
    bootstrap = settings.bootstrap_servers or ""

    def attach(agent: str) -> Sidecar:
        dev = settings.with_overrides(profile="development")  # no operator policy in this test
        return Sidecar(Cluster(dev, bootstrap), codec.serde, AgentSpec(agent), heartbeat_s=1.0)

    async with (
        attach("alice") as alice,
        attach("bob") as bob,
        attach("carol") as carol,
        attach("dave") as dave,
    ):
        while not {"alice", "bob", "carol", "dave"} <= set(alice.agents()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await alice.task_event("t-1", "REQUESTED", summary="a brief")
        await alice.write_context("t-1", "brief", {"words": 300})
        first = await alice.send("bob", text="please draft", task_id="t-1")
        got = await bob.receive(timeout_s=10)
        assert got is not None and got.message_id == first
        await asyncio.sleep(0.002)  # clock separation (ms timestamps), not synchronisation
        between = int(time.time() * 1000)
        await asyncio.sleep(0.002)
        await bob.task_event("t-1", "HANDED_OFF", target="carol")
        await bob.send("carol", text="yours now", reply_to=got)
        handed = await carol.receive(timeout_s=10)
        assert handed is not None
        await carol.write_context("t-1", "draft", "v1")
        await carol.send("dave", text="fyi", task_id="t-1")  # dave takes part by message only
        assert await dave.receive(timeout_s=10) is not None
        await carol.task_event("t-1", "COMPLETED", artifact_uris=("s3://out/t-1",))
        # Wait while the agents are registered: the live projection judges a sender by the
        # registry as it is when the record is processed, so a message read after its sender
        # retired (a new inbox is picked up within seconds) would be refused live.
        deadline = time.monotonic() + 60
        while (now := await asyncio.to_thread(live, settings, codec, "t-1")) is None or (
            now.status != "COMPLETED" or len(now.participants) < 4
        ):
            assert time.monotonic() < deadline, f"the live projection: {now}"
            await asyncio.sleep(0.1)
    return between  # leaving the block retired every agent


def test_time_travel_folds_what_the_projection_folds(
    settings: Settings, topics: TopicAdmin
) -> None:
    codec, registry = codec_for(settings)
    bootstrap = settings.bootstrap_servers or ""
    engines = [
        Engine.keyed(RegistryProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec),
        Engine.keyed(StateProcessor(), Cluster(settings, bootstrap), codec),
    ]
    with running(engines):
        between = asyncio.run(exchange(settings, codec))
        wait_for(  # the registry has folded every retirement before it stops
            lambda: (
                {
                    a.status.value
                    for a in read_agents(Cluster(settings, bootstrap), codec.serde).values()
                }
                == {"RETIRED"}
            ),
            30,
            "every agent retired",
        )
    agents = read_agents(Cluster(settings, bootstrap), codec.serde)
    assert {a.status.value for a in agents.values()} == {"RETIRED"}  # judged as they were
    keys = read_keys(Cluster(settings, bootstrap), codec.serde, mesh_anchor(settings))
    rebuilt, skipped = rebuild_task(Cluster(settings, bootstrap), codec, agents, keys, "t-1")
    assert skipped == 0
    assert comparable(rebuilt) == comparable(live(settings, codec, "t-1"))
    assert rebuilt is not None and rebuilt.status == "COMPLETED"
    assert sorted(rebuilt.participants) == ["alice", "bob", "carol", "dave"]

    earlier, _ = rebuild_task(
        Cluster(settings, bootstrap), codec, agents, keys, "t-1", as_of_ms=between
    )
    assert earlier is not None
    assert earlier.status == "REQUESTED" and sorted(earlier.participants) == ["alice", "bob"]
    assert set(earlier.context) == {"brief"}
    registry.close()
