"""Issue 14: stop every processor and start them all again. The registry, the halts in force,
the state projections and the kill-switch's windows are as they were."""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.adapters.commands import read_halts
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.keyfiles import trust_anchors
from mesh.settings import Cluster, Settings
from processors.runtime.engine import Engine
from processors.state import StateProcessor
from tests.integration.fleet import codec_for, killswitch_engine, running
from tests.integration.test_cli import run
from tests.integration.test_sidecar import Mesh, _until, registry_processor
from tests.integration.test_time_travel import live

POLICY = {"agent": {"max_cost_per_minute": 1.0}}


def processors(settings: Settings, codec: Any) -> list[Engine]:
    cluster = Cluster.of(settings)
    return [
        Engine.keyed(registry_processor(settings), cluster, codec),
        Engine.keyed(StateProcessor(), cluster, codec),
        killswitch_engine(settings, codec, POLICY),
    ]


async def test_everything_stopped_and_started_again_is_as_it_was(
    settings: Settings, topics: object
) -> None:
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    async with mesh.sidecar("alice") as alice, mesh.sidecar("bob") as bob:
        first = processors(settings, codec)
        with running(first):
            await _until(lambda: all(e.ready for e in first), "the processors", 60)
            await _until(lambda: {"alice", "bob"} <= set(alice.agents()), "registrations", 30)
            await alice.task_event("t-r", "REQUESTED", summary="restart me")
            await alice.write_context("t-r", "brief", {"words": 100})
            halted = await asyncio.to_thread(
                run, ["halt", "bob", "--reason", "before the restart"], settings
            )
            assert halted.returncode == 0, halted.stderr
            await alice.report_model_call("m", cost_usd=0.6)  # inside the minute's window
            await _until(lambda: bob.halt is not None, "bob halted")
            await _until(lambda: live(settings, codec, "t-r") is not None, "state", 30)
            await asyncio.sleep(1.0)  # everything committed
            agents_before = read_agents(cluster, codec.serde)
            halts_before = read_halts(cluster, codec, trust_anchors(settings)).halts
            state_before = live(settings, codec, "t-r")

        second = processors(settings, codec)  # every processor started again
        with running(second):
            await _until(lambda: all(e.ready for e in second), "the processors again", 60)
            agents_after = read_agents(cluster, codec.serde)
            assert {a: s.public_key for a, s in agents_after.items()} == {
                a: s.public_key for a, s in agents_before.items()
            }
            assert agents_after["bob"].status.value == "HALTED"
            assert read_halts(cluster, codec, trust_anchors(settings)).halts == halts_before
            assert live(settings, codec, "t-r") == state_before
            await alice.report_model_call("m", cost_usd=0.6)  # 1.2 in the minute, across it
            await _until(lambda: alice.halt is not None, "the window remembered", 30)
            assert alice.halt is not None and alice.halt["rule"] == "spend_per_minute"
    registry.close()
