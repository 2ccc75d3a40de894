"""End-to-end halt latency: a telemetry event over budget -> the agent's sidecar refusing sends.

A real sidecar (``runaway``) reports a model call that takes it over its per-minute spend;
the registry and kill-switch processors run as in production (exactly-once engines, 20 ms
commit interval). The latency is measured by the sidecar itself: from the produce time of the
triggering telemetry record (its Kafka timestamp, set when the sidecar sent it) to the moment
the sidecar applied the HALT it read from ``mesh.control.v2`` (after which every send raises
HaltedError; each trial checks that it does). Between trials an operator RESUME is produced
and both the sidecar and the kill-switch are seen to apply it.

Baseline in the same run: the raw confluent-kafka relay of ``bench/halt.py`` (produce ->
consume+produce -> consume, no decoding, no transactions) on the same broker.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer

from bench._kafka import mesh_on_fresh_topics
from bench._report import percentile, write_results
from bench.halt import halts_in_force, killswitch_running, raw_trials
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.keyfiles import operator_key
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, Scope, control_key, control_record
from mesh.domain.topics import CONTROL
from mesh.errors import HaltedError
from mesh.settings import Cluster, Settings
from processors.runtime.engine import Engine
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec

TRIALS = int(os.environ.get("BENCH_TRIALS", "200"))


async def trials(
    settings: Settings, bootstrap: str, codec: MessageCodec, killswitch: Engine
) -> tuple[list[float], int]:
    serde = codec.serde
    runaway = Sidecar(Cluster(settings, bootstrap), serde, AgentSpec("runaway"), heartbeat_s=5.0)
    peer = Sidecar(Cluster(settings, bootstrap), serde, AgentSpec("peer"), heartbeat_s=5.0)
    await runaway.start()
    await peer.start()
    operator = operator_key(settings)
    producer = Producer(producer_config(Cluster(settings, bootstrap), **{"linger.ms": 0}))
    refused = 0
    try:
        while not {"runaway", "peer"} <= set(runaway.agents()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        for _ in range(TRIALS + 5):
            await runaway.report_model_call("big-model", cost_usd=2.0, latency_ms=900.0)
            deadline = time.monotonic() + 10
            while runaway.halt is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("no halt reached the sidecar")
                await asyncio.sleep(0.001)
            try:
                await runaway.send("peer", text="still here?")
            except HaltedError:
                refused += 1
            resume = control_record(
                Action.RESUME,
                Scope.AGENT,
                "runaway",
                rule="operator",
                reason="bench",
                requested_by=operator.agent_id,
                lifts=runaway.halt["command_id"] if runaway.halt else None,
            )
            value = seal_control(codec, operator, resume, int(time.time() * 1000))
            full = f"{settings.topic_prefix}{CONTROL}"
            producer.produce(full, value, control_key(Scope.AGENT, "runaway").encode())
            producer.flush(10)
            while runaway.halt is not None or halts_in_force(killswitch):  # noqa: ASYNC110
                await asyncio.sleep(0.002)
    finally:
        await runaway.stop()
        await peer.stop()
    return runaway.counters.halt_latencies_ms[5:], refused


def main() -> None:
    with (
        mesh_on_fresh_topics("halte2e", 6) as (settings, bootstrap, codec),
        killswitch_running(settings, bootstrap, codec) as (killswitch, _),
    ):
        raw = raw_trials(settings, bootstrap)
        latencies, refused = asyncio.run(trials(settings, bootstrap, codec, killswitch))
    figures: dict[str, object] = {
        "trials": len(latencies),
        "sends refused while halted": refused,
        "halt to sidecar p50 (ms)": statistics.median(latencies),
        "halt to sidecar p99 (ms)": percentile(latencies, 0.99),
        "halt to sidecar max (ms)": max(latencies),
        "raw relay latency p50 (ms)": statistics.median(raw),
        "raw relay latency p99 (ms)": percentile(raw, 0.99),
    }
    for k, v in figures.items():
        print(f"{k}: {v:,.1f}" if isinstance(v, float) else f"{k}: {v}")
    ratios = {
        "p50 / raw relay p50": statistics.median(latencies) / statistics.median(raw),
        "p99 / target 500 ms": percentile(latencies, 0.99) / 500,
    }
    path = write_results(
        "halt_e2e",
        figures,
        ratios,
        f"{len(latencies)} trials after 5 warm-up; from the triggering telemetry record's "
        "produce time to the sidecar applying the HALT; each trial checks a send is refused.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
