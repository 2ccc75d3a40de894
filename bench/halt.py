"""Halt latency benchmark: telemetry crossing a threshold -> the halt readable on control.

One agent is registered; the registry processor and the kill-switch run as they do in
production (exactly-once engines, 20 ms commit interval). Each trial produces one telemetry
event that takes the agent over its per-minute spend budget, then waits for the HALT to be
readable by a ``read_committed`` consumer of ``mesh.control.v2``; the latency is from just
before the trigger's produce call to that read. The bench then resumes the agent (as an
operator would) and waits for the kill-switch to see the resume before the next trial.

Baseline in the same run: a raw confluent-kafka relay on the same broker (consume the trigger,
produce a record, no decoding, no transactions), read by the same kind of consumer.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition

from bench._kafka import mesh_on_fresh_topics
from bench._report import percentile, write_results
from mesh.adapters.kafka.config import consumer_config, producer_config
from mesh.adapters.keyfiles import control_signers, mesh_key, operator_key
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, Scope, control_record
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey
from mesh.domain.topics import CONTROL, REGISTRY_EVENTS, TASKS, TELEMETRY
from mesh.settings import Cluster, Settings
from processors.killswitch import KillSwitchProcessor
from processors.killswitch.policy import parse_policy
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine

# Fleet limits out of reach: each trial spends $2 and fleet windows outlive an agent resume.
POLICY = parse_policy(
    {
        "agent": {"max_cost_per_minute": 1.0},
        "fleet": {"max_cost_per_minute": 1e9, "max_cost_per_hour": 1e9},
    }
)
TRIALS = int(os.environ.get("BENCH_TRIALS", "200"))


def tail_consumer(settings: Settings, bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer(
        consumer_config(Cluster(settings, bootstrap), f"tail-{uuid.uuid4().hex[:6]}")
    )
    full = f"{settings.topic_prefix}{topic}"
    partitions = consumer.list_topics(full, timeout=10).topics[full].partitions
    consumer.assign([TopicPartition(full, p, -1) for p in partitions])  # -1: the end
    return consumer


def await_record(consumer: Consumer, match: bytes, timeout_s: float = 10.0) -> float:
    return await_value(consumer, match, timeout_s)[0]


def await_value(consumer: Consumer, match: bytes, timeout_s: float = 10.0) -> tuple[float, bytes]:
    """When the first record holding ``match`` arrived, and its value."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        message = consumer.poll(0.001)
        value = message.value() if message is not None and not message.error() else None
        if value is not None and match in value:
            return time.perf_counter(), value
    raise TimeoutError("no record arrived")


def mesh_trials(settings: Settings, bootstrap: str, codec: MessageCodec) -> list[float]:
    agent = AgentKey.generate("runaway")
    operator = operator_key(settings)
    producer = Producer(producer_config(Cluster(settings, bootstrap), **{"linger.ms": 0}))
    registration = {
        "agent_id": agent.agent_id,
        "owner": "bench",
        "version": "1",
        "public_key": agent.public_bytes,
        "agent_card_json": '{"name": "runaway"}',
    }
    send(producer, codec, agent, settings, REGISTRY_EVENTS, "mesh.registry.AgentRegistered",
         registration)  # fmt: skip
    latencies = []
    with killswitch_running(settings, bootstrap, codec) as (killswitch, engines):
        while engines[0].metrics.records_out < 1 or not engines[1].ready:
            time.sleep(0.05)
        control = tail_consumer(settings, bootstrap, CONTROL)
        time.sleep(1.0)
        for trial in range(TRIALS + 5):
            marker = f"trial-{trial}-{uuid.uuid4().hex[:6]}"
            body = {"agent_id": agent.agent_id, "kind": "MODEL_CALL", "name": marker,
                    "peer": None, "arguments_digest": None, "input_tokens": 900,
                    "output_tokens": 300, "cost_usd": 2.0, "latency_ms": 800.0, "ok": True,
                    "detail": None}  # fmt: skip
            started = time.perf_counter()
            message_id = send(producer, codec, agent, settings, TELEMETRY,
                              "mesh.telemetry.TelemetryEvent", body)  # fmt: skip
            arrived, halt = await_value(control, message_id.encode())
            if trial >= 5:  # warm-up trials are not counted
                latencies.append((arrived - started) * 1000)
            lifts = codec.open(halt, verify=False).body["command_id"]
            resume = control_record(Action.RESUME, Scope.AGENT, agent.agent_id, rule="operator",
                                    reason="bench", requested_by=operator.agent_id,
                                    lifts=lifts)  # fmt: skip
            value = seal_control(codec, operator, resume, int(time.time() * 1000))
            producer.produce(f"{settings.topic_prefix}{CONTROL}", value, agent.agent_id.encode())
            producer.flush(10)
            deadline = time.monotonic() + 10
            while halts_in_force(killswitch):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"trial {trial}: resume not seen: {halts_in_force(killswitch)}"
                    )
                time.sleep(0.002)
        control.close()
    return latencies


def halts_in_force(killswitch: Engine) -> list[str]:
    """The control keys the kill-switch holds halted: its book, and the halts it issued that
    have not come back on the control topic yet (they count as in force)."""
    processor = killswitch.job.processor
    if not isinstance(processor, KillSwitchProcessor):
        return []
    return [*processor.book.halts, *processor.issued]


@contextlib.contextmanager
def killswitch_running(
    settings: Settings, bootstrap: str, codec: MessageCodec
) -> Iterator[tuple[Engine, list[Engine]]]:
    """The registry and kill-switch engines (POLICY), each in a thread, for the block."""
    processor = KillSwitchProcessor(codec, mesh_key(settings), POLICY, control_signers(settings))
    killswitch = Engine.keyed(processor, Cluster(settings, bootstrap), codec)
    engines = [
        Engine.keyed(RegistryProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec),
        killswitch,
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=e.run, kwargs={"until": stop.is_set}) for e in engines]
    for thread in threads:
        thread.start()
    try:
        yield killswitch, engines
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def send(
    producer: Producer,
    codec: MessageCodec,
    key: AgentKey,
    settings: Settings,
    topic: str,
    subject: str,
    body: Mapping[str, object],
) -> str:
    message_id = str(uuid.uuid4())
    envelope = Envelope(message_id, "c", "c", key.agent_id, RecipientKind.BROADCAST, "",
                        int(time.time() * 1000))  # fmt: skip
    value = codec.seal(envelope, subject, body, key)
    producer.produce(f"{settings.topic_prefix}{topic}", value, key.agent_id.encode())
    producer.poll(0)
    producer.flush(0.001)
    return message_id


def raw_trials(settings: Settings, bootstrap: str) -> list[float]:
    """The same shape with raw clients: produce -> relay (consume, produce) -> tail consumer."""
    source, sink = f"{settings.topic_prefix}{TASKS}", f"{settings.topic_prefix}{TELEMETRY}"
    stop = threading.Event()

    def relay() -> None:
        group = f"relay-{uuid.uuid4().hex[:6]}"
        cluster = Cluster(settings, bootstrap)
        consumer = Consumer(consumer_config(cluster, group, **{"auto.offset.reset": "latest"}))
        out = Producer(producer_config(Cluster(settings, bootstrap), **{"linger.ms": 0}))
        consumer.subscribe([source])
        while not stop.is_set():
            for message in consumer.consume(100, 0.001):
                if not message.error():
                    out.produce(sink, message.value(), message.key())
            out.poll(0)
        consumer.close()

    thread = threading.Thread(target=relay)
    thread.start()
    producer = Producer(producer_config(Cluster(settings, bootstrap), **{"linger.ms": 0}))
    tail = tail_consumer(settings, bootstrap, TELEMETRY)
    time.sleep(3.0)  # the relay joins its group
    latencies = []
    try:
        for trial in range(TRIALS + 5):
            marker = f"raw-{trial}-{uuid.uuid4().hex}".encode()
            started = time.perf_counter()
            producer.produce(source, marker + b"x" * 600, b"runaway")
            producer.poll(0)
            arrived = await_record(tail, marker)
            if trial >= 5:
                latencies.append((arrived - started) * 1000)
    finally:
        stop.set()
        thread.join(30)
        tail.close()
    return latencies


def main() -> None:
    with mesh_on_fresh_topics("halt", 6) as (settings, bootstrap, codec):
        raw = raw_trials(settings, bootstrap)
        mesh = mesh_trials(settings, bootstrap, codec)
    figures: dict[str, object] = {
        "trials": len(mesh),
        "halt latency p50 (ms)": statistics.median(mesh),
        "halt latency p99 (ms)": percentile(mesh, 0.99),
        "halt latency max (ms)": max(mesh),
        "raw relay latency p50 (ms)": statistics.median(raw),
        "raw relay latency p99 (ms)": percentile(raw, 0.99),
    }
    for k, v in figures.items():
        print(f"{k}: {v:,.1f}" if isinstance(v, float) else f"{k}: {v}")
    ratios = {
        "halt p50 / raw relay p50": figures["halt latency p50 (ms)"]  # type: ignore[operator]
        / figures["raw relay latency p50 (ms)"],
        "halt p99 / target 250 ms": figures["halt latency p99 (ms)"] / 250,  # type: ignore[operator]
    }
    path = write_results(
        "halt",
        figures,
        ratios,
        f"{TRIALS} trials; latency from the trigger's produce call to the HALT read by a "
        "read_committed consumer of mesh.control.v2; kill-switch verifies each telemetry "
        "signature; 20 ms commit interval.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
