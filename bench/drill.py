"""The scheduled kill-switch drill (``stack.drill``): how long its halt and its resume take.

``BENCH_TRIALS`` drills (default 100, after 3 warm-up) of a canary whose sidecar runs in this
process, with the registry and kill-switch processors running as in production. A drill's halt
is timed from signing and producing the operator's command (a producer kept for every command,
as the drill keeps one) to the canary's sidecar having applied it, its ``HALT_ACK`` written
first; the resume, to the canary acting again.

Baseline in the same run, on the same broker: the same bytes (a sealed halt's size) produced by
a kept confluent-kafka producer and received by a plain aiokafka consumer with the sidecar's
fetch settings, from the produce call to receipt: the floor any halt that travels through
Kafka pays here. Both wait for the broker's acknowledgement before they start waiting.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer

from bench._kafka import mesh_on_fresh_topics
from bench._report import percentile, write_results
from bench.halt import killswitch_running
from mesh.adapters.kafka.config import aiokafka_consumer_config, producer_config
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.topics import TASKS
from mesh.settings import Cluster, Settings
from stack.drill import Drill, canary_sidecar

TRIALS = int(os.environ.get("BENCH_TRIALS", "100"))
WARM_UP = 3


async def drills(cluster: Cluster, codec: MessageCodec) -> tuple[list[float], list[float]]:
    halts, resumes = [], []
    async with canary_sidecar(cluster, codec.serde) as canary:
        drill = Drill(cluster, canary, every_s=60, deadline_s=10)
        deadline = time.monotonic() + 60
        while canary.agent_id not in canary.agents() or canary.plane.killswitch_age_s() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the canary or the kill-switch never showed in the registry")
            await asyncio.sleep(0.1)
        for trial in range(TRIALS + WARM_UP):
            result = await drill.run_once()
            if not result.ok or result.halt_ms is None or result.resume_ms is None:
                raise RuntimeError(f"drill {trial} failed: {result.failure}")
            if trial >= WARM_UP:
                halts.append(result.halt_ms)
                resumes.append(result.resume_ms)
    return halts, resumes


async def raw(settings: Settings, bootstrap: str, size: int) -> list[float]:
    cluster = Cluster(settings, bootstrap)
    topic = cluster.topic(TASKS)
    producer = Producer(producer_config(cluster))
    consumer = AIOKafkaConsumer(
        topic, **{**aiokafka_consumer_config(cluster, None), "auto_offset_reset": "latest"}
    )
    await consumer.start()
    latencies: list[float] = []
    try:
        await consumer.getmany(timeout_ms=2000)  # assigned, at the end
        for trial in range(TRIALS + WARM_UP):
            marker = f"raw-{uuid.uuid4().hex}".encode()
            value = marker + b"x" * max(0, size - len(marker))

            def produce(value: bytes = value) -> None:
                producer.produce(topic, value, b"bench:raw")
                producer.flush(10)

            started = time.monotonic()
            await asyncio.to_thread(produce)
            while True:
                record = await consumer.getone()
                if record.value == value:
                    break
            if trial >= WARM_UP:
                latencies.append((time.monotonic() - started) * 1000)
    finally:
        await consumer.stop()
    return latencies


def main() -> None:
    with (
        mesh_on_fresh_topics("drill", 6) as (settings, bootstrap, codec),
        killswitch_running(settings, bootstrap, codec),
    ):
        cluster = Cluster(settings, bootstrap)
        halts, resumes = asyncio.run(drills(cluster, codec))
        baseline = asyncio.run(raw(settings, bootstrap, size=700))
    figures: dict[str, object] = {
        "drills": len(halts),
        "halt: signed and produced to HALT_ACK, p50 (ms)": statistics.median(halts),
        "halt p99 (ms)": percentile(halts, 0.99),
        "resume to acting again, p50 (ms)": statistics.median(resumes),
        "resume p99 (ms)": percentile(resumes, 0.99),
        "raw produce to receipt, p50 (ms)": statistics.median(baseline),
        "raw p99 (ms)": percentile(baseline, 0.99),
    }
    for name, value in figures.items():
        print(f"{name}: {value:,.1f}" if isinstance(value, float) else f"{name}: {value}")
    ratios = {
        "halt p50 / raw p50": statistics.median(halts) / statistics.median(baseline),
        "halt p99 / target 500 ms": percentile(halts, 0.99) / 500,
    }
    path = write_results(
        "drill",
        figures,
        ratios,
        f"{len(halts)} drills after {WARM_UP} warm-up, one at a time, canary in this process; "
        "registry and kill-switch processors running; raw = kept confluent-kafka producer to "
        "an aiokafka consumer with the sidecar's fetch settings, same broker, ~700 B records.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
