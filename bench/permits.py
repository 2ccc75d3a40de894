"""What tool permits cost an agent's turn (issue 20: no more than 10%, or say why).

One sidecar (``bench-a``, production profile, an operator's fleet policy with a JSON Schema
on the tool's arguments in force) runs agent turns against a registered peer, in interleaved
rounds on the same broker:

* **before**: the tool call reported after the fact (the policy and budget checks and one
  awaited telemetry write, the path a tool report took before permits), then a send;
* **permit**: the same turn under a permit: ``permit_tool`` (tool, argument schema, cost cap,
  budget reservation, one telemetry write), the report quoting it, then the send;
* **raw**: confluent-kafka producing the same number of same-size records per turn, each one
  acknowledged before the next (as the sidecar awaits each write), with no checks at all.

Every figure is a median of the rounds; the ratios compare paths within one run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer

from bench._kafka import mesh_on_fresh_topics
from bench._report import write_results
from bench.messaging import registry_running
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.keyfiles import control_signers
from mesh.adapters.policies import publish_policy
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.policies import FLEET
from mesh.domain.topics import TELEMETRY
from mesh.settings import Cluster, Settings
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec
from sidecar.telemetry import Kind

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TURNS = int(os.environ.get("BENCH_TURNS", "400"))
POLICY = {
    "allowed_tools": ["search"],
    "tools": {
        "search": {
            "arguments": {
                "type": "object",
                "properties": {
                    "q": {"type": "string", "maxLength": 200},
                    "page": {"type": "integer"},
                },
                "required": ["q"],
                "additionalProperties": False,
            },
            "max_cost_usd": 0.01,
        }
    },
}


async def turns_before(sidecar: Sidecar, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await sidecar.reports.report(Kind.TOOL_CALL, "search", 0.0, None, latency_ms=1.0)
        await sidecar.send("bench-b", text="result")
    return n / (time.perf_counter() - started)


async def turns_permit(sidecar: Sidecar, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        arguments = {"q": "kafka exactly-once", "page": i}
        permit = await sidecar.permit_tool("search", arguments)
        await sidecar.report_tool_call("search", arguments, permit=permit, latency_ms=1.0)
        await sidecar.send("bench-b", text="result")
    return n / (time.perf_counter() - started)


def turns_raw(producer: Producer, topic: str, value: bytes, records: int, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        for _ in range(records):
            producer.produce(topic, value, b"bench-a")
            producer.flush()
    return n / (time.perf_counter() - started)


async def run(settings: Settings, bootstrap: str, codec: MessageCodec) -> dict[str, Any]:
    cluster = Cluster(settings, bootstrap)
    publish_policy(cluster, codec, control_signers(settings), FLEET, POLICY, "benchmark")
    sender = Sidecar(cluster, codec.serde, AgentSpec("bench-a"))
    peer = Sidecar(cluster, codec.serde, AgentSpec("bench-b"))
    await sender.start()
    await peer.start()
    with registry_running(settings, bootstrap, codec):  # until the agents know each other
        while "bench-b" not in sender.agents() or sender.operator_policy is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    producer = Producer(producer_config(cluster))
    value = sender.outbox.telemetry(Kind.TOOL_CALL, "search")[2]
    topic = cluster.topic(TELEMETRY)
    rates: dict[str, list[float]] = {"before": [], "permit": [], "raw2": [], "raw3": []}
    try:
        await turns_permit(sender, 50)  # warm-up
        for _ in range(ROUNDS):
            rates["before"].append(await turns_before(sender, TURNS))
            rates["permit"].append(await turns_permit(sender, TURNS))
            rates["raw2"].append(turns_raw(producer, topic, value, 2, TURNS))
            rates["raw3"].append(turns_raw(producer, topic, value, 3, TURNS))
    finally:
        await peer.stop()
        await sender.stop()
    return {k: statistics.median(v) for k, v in rates.items()} | {"bytes": len(value)}


def main() -> None:
    with mesh_on_fresh_topics("permits", 3) as (settings, bootstrap, codec):
        med = asyncio.run(run(settings, bootstrap, codec))
    before, permit = med["before"], med["permit"]
    figures: dict[str, object] = {
        "rounds": ROUNDS,
        "turns per round": TURNS,
        "before: report + send (turns/s, median)": before,
        "permit: permit + report + send (turns/s, median)": permit,
        "raw: 2 acknowledged records per turn (turns/s, median)": med["raw2"],
        "raw: 3 acknowledged records per turn (turns/s, median)": med["raw3"],
        "turn time before (ms)": 1000 / before,
        "turn time with a permit (ms)": 1000 / permit,
        "a permit's cost per turn (ms)": 1000 / permit - 1000 / before,
        "telemetry record size (bytes)": med["bytes"],
    }
    for k, v in figures.items():
        print(f"{k}: {v:,.2f}" if isinstance(v, float) else f"{k}: {v}")
    ratios = {
        "permit turns / before turns": permit / before,
        "permit turns / raw 3-record turns": permit / med["raw3"],
        "before turns / raw 2-record turns": before / med["raw2"],
        "raw 3-record / raw 2-record turns": med["raw3"] / med["raw2"],
    }
    path = write_results(
        "permits",
        figures,
        ratios,
        f"{ROUNDS} interleaved rounds of {TURNS} turns, one sidecar in production with an "
        "operator policy (JSON Schema on the tool's arguments); a turn = a tool call and a send; "
        "before = the report-after-the-fact path, permit = permit, report, send; raw = "
        "confluent-kafka producing as many records per turn, each acknowledged before the next.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
