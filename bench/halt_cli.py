"""`mesh halt` from a one-shot process: the call to the broker's acknowledgement of the command.

The CLI makes its clients anew for each command. Each sample times, in turn (interleaved, so
noise hits all alike), on the same broker and with the same signed bytes:

* **mesh halt**: ``send_command`` exactly as ``mesh halt AGENT --force`` calls it (the
  registry read once, the command signed, produced through a new producer, acknowledged);
* **idempotent one-shot**: the produce alone, through a new idempotent producer (the path
  before commands were made repeatable: it first asks for a producer id);
* **raw**: the produce alone, through a new plain confluent-kafka producer (``acks=all``).

Each commits one record per call. Python's start-up is left out (the same for any path). It
runs idle, then with a background producer writing ``BENCH_LOAD_RATE`` records a second.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer

from bench._kafka import mesh_on_fresh_topics
from bench._report import median, percentile, write_results
from mesh.adapters.commands import send_command
from mesh.adapters.kafka.config import base_config, producer_config
from mesh.adapters.kafka.producing import produce_one
from mesh.adapters.keyfiles import operator_key
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, Scope, control_key, control_record
from mesh.domain.topics import CONTROL, TELEMETRY
from mesh.settings import Cluster

SAMPLES = int(os.environ.get("BENCH_SAMPLES", "100"))
LOAD_RATE = int(os.environ.get("BENCH_LOAD_RATE", "2000"))
Timed = Callable[[], None]


def timed(call: Timed) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def contenders(cluster: Cluster, codec: MessageCodec) -> dict[str, Timed]:
    topic = cluster.topic(CONTROL)
    key = operator_key(cluster.settings)
    record = control_record(Action.HALT, Scope.AGENT, "bench-target", rule="operator",
                            reason="bench", requested_by=key.agent_id)  # fmt: skip
    value = seal_control(codec, key, record, int(time.time() * 1000))
    where = control_key(Scope.AGENT, "bench-target")

    def mesh_halt() -> None:
        send_command(cluster, Action.HALT, Scope.AGENT, "bench-target", "bench", force=True)

    def idempotent() -> None:
        produce_one(cluster, topic, where, value, "the command")

    def raw() -> None:
        producer = Producer({**base_config(cluster), "acks": "all"})
        producer.produce(topic, value, where.encode())
        if producer.flush(15):
            raise TimeoutError("raw produce not acknowledged")

    return {"mesh halt": mesh_halt, "idempotent one-shot": idempotent, "raw": raw}


def sample(calls: dict[str, Timed]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(SAMPLES):
        for name, call in calls.items():
            times[name].append(timed(call))
    return times


def load(cluster: Cluster, stop: threading.Event) -> None:
    """Records of 300 B at LOAD_RATE a second to the telemetry topic, until ``stop``."""
    producer = Producer(producer_config(cluster))
    topic, value, sent = cluster.topic(TELEMETRY), b"x" * 300, 0
    started = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - started) * LOAD_RATE)
        for _ in range(due - sent):
            producer.produce(topic, value, uuid.uuid4().bytes)
        sent = max(sent, due)
        producer.poll(0.005)
    producer.flush(10)


def summary(phase: str, times: dict[str, list[float]]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, values in times.items():
        figures[f"{phase}: {name} p50 (ms)"] = round(median(values), 2)
        figures[f"{phase}: {name} p99 (ms)"] = round(percentile(values, 0.99), 2)
        figures[f"{phase}: {name} over 200 ms"] = sum(v > 200 for v in values)
    return figures


def main() -> None:
    with mesh_on_fresh_topics("halt-cli", 3) as (settings, bootstrap, codec):
        cluster = Cluster(settings, bootstrap)
        calls = contenders(cluster, codec)
        first = {name: round(timed(call), 2) for name, call in calls.items()}
        idle = sample(calls)
        stop = threading.Event()
        loader = threading.Thread(target=load, args=(cluster, stop), daemon=True)
        loader.start()
        time.sleep(2)
        loaded = sample(calls)
        stop.set()
        loader.join(15)
    figures: dict[str, float] = {f"first call: {n} (ms)": v for n, v in first.items()}
    figures |= summary("idle", idle) | summary("loaded", loaded)
    figures["samples per path and phase"] = SAMPLES
    figures["load (records/s)"] = LOAD_RATE
    ratios = {
        "idle: mesh halt p50 / raw p50": median(idle["mesh halt"]) / median(idle["raw"]),
        "loaded: mesh halt p50 / raw p50": median(loaded["mesh halt"]) / median(loaded["raw"]),
        "loaded: mesh halt p99 / raw p99": percentile(loaded["mesh halt"], 0.99)
        / percentile(loaded["raw"], 0.99),
        "loaded: idempotent one-shot p99 / raw p99": percentile(loaded["idempotent one-shot"], 0.99)
        / percentile(loaded["raw"], 0.99),
    }
    notes = (
        f"{SAMPLES} samples per path, interleaved, idle and then under {LOAD_RATE} records/s of "
        "background produce; each call makes its clients anew as the CLI does (Python start-up "
        "left out). mesh halt = send_command as `mesh halt AGENT --force` calls it (registry "
        "read, signed, produced, acknowledged); idempotent one-shot = the produce alone through "
        "a new idempotent producer (before commands were repeatable); raw = a new plain "
        "confluent-kafka producer, acks=all, the same signed bytes. One record committed per call."
    )
    print(write_results("halt_cli", figures, {k: round(v, 2) for k, v in ratios.items()}, notes))
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
