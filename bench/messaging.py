"""Agent-to-agent messaging through two sidecars, against raw confluent-kafka, in one run.

The mesh path: agent ``bench-a``'s sidecar sends to ``bench-b``'s, each in its own process as
in production (one sidecar per agent). Every message is validated against its schema, stamped,
Avro-encoded, Ed25519-signed and produced (with its MESSAGE_SENT telemetry record) by the
sender; consumed, signature-verified against the registry's key, de-duplicated and decoded by
the receiver, and taken by the receiving agent (``receive()``).

The baseline: a confluent-kafka producer in this process and a confluent-kafka consumer in
another, moving the same bytes (a sealed mesh message of the same size) over the same broker,
with no encoding, signing or verification.

Phases, each run for both paths, interleaved per round (so noise hits both alike):

* throughput: N messages sent as fast as the path allows (the sidecar with up to ``WINDOW``
  sends in flight), rate = N / (first send .. last taken by the receiver);
* latency: ``RATE`` messages/s for ``SECONDS`` seconds, each carrying its send time (wall
  clock, shared by both processes); latency = taken by the receiver - send called.

Profile: one more mesh throughput run with both processes sampled by py-spy at 500 Hz
(bench/_pyspy.py; cProfile's per-call cost would overstate the pure-Python parts), samples
bucketed by module: signing (sender's Ed25519), verification (receiver's Ed25519), serde (Avro,
JSON, envelope, schema validation), client (aiokafka), the rest (asyncio, sidecar logic,
policy). Each side's busy shares times its CPU per message (measured unsampled in the
throughput rounds) give microseconds per message.

Amortized signatures, projected: one Ed25519 signature per sender batch over the Merkle root of
its messages, each message carrying its inclusion proof (log2(batch) SHA-256 hashes) in the
envelope's signature field, makes verification per message verify/batch + log2(batch) hashes.
Both costs are measured in this run; the projection is arithmetic on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import multiprocessing as mp
import os
import queue
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from bench._kafka import mesh_on_fresh_topics
from bench._pyspy import Spy, shares
from bench._report import percentile, write_results
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import consumer_config, producer_config
from mesh.adapters.keyfiles import mesh_key
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import new_envelope
from mesh.domain.identity import AgentKey, verify_signature
from mesh.domain.topics import inbox_topic
from mesh.settings import Cluster, Settings
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine
from sidecar.core import MESSAGE_SUBJECT, Sidecar, message_body
from sidecar.spec import AgentSpec

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
THROUGHPUT_N = int(os.environ.get("BENCH_MESSAGES", "10000"))
RATE = int(os.environ.get("BENCH_RATE", "1000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
PROFILED = 5_000  # messages in the sampled run
WINDOW = 256  # sends in flight from the sending agent in the throughput phase
TEXT = "summarise the attached findings for the reviewer; " * 5  # ~255 characters


# -- the receiving side (its own process) ----------------------------------------------------


def mesh_receiver(settings: Settings, bootstrap: str, commands: Any, results: Any) -> None:
    asyncio.run(_mesh_receiver(settings, bootstrap, commands, results))


async def _mesh_receiver(settings: Settings, bootstrap: str, commands: Any, results: Any) -> None:
    registry = KafkaRegistry(Cluster(settings, bootstrap))
    sidecar = Sidecar(Cluster(settings, bootstrap), Serde(registry), AgentSpec("bench-b"))
    await sidecar.start()
    results.put("ready")
    try:
        while (command := await asyncio.to_thread(commands.get)) is not None:
            results.put(await _take(sidecar, command))
    finally:
        await sidecar.stop()
        registry.close()


async def _take(sidecar: Sidecar, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    last = 0.0
    cpu = time.process_time()
    for _ in range(count):
        delivery = await sidecar.receive(timeout_s=120)
        if delivery is None:
            raise TimeoutError(f"bench-b got {len(latencies)} of {count} messages")
        last = time.time()
        latencies.append((last - delivery.data()["t"]) * 1000)
    return {"latencies": latencies, "last": last, "cpu": time.process_time() - cpu}


def raw_receiver(settings: Settings, bootstrap: str, commands: Any, results: Any) -> None:
    """One consumer for the whole run, assigned from the start of the raw topic (as the
    sidecar's inbox consumer is long-lived too); each command takes the next ``count``."""
    topic, partitions = commands.get()
    consumer = Consumer(consumer_config(Cluster(settings, bootstrap), f"raw-{uuid.uuid4().hex}"))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    consumer.consume(1, 1.0)  # connected and fetching before the first count
    results.put("ready")
    while (count := commands.get()) is not None:
        latencies: list[float] = []
        last = 0.0
        cpu = time.process_time()
        while len(latencies) < count:
            # consume(n, timeout) waits for n messages or the timeout: poll one when idle so
            # a paced message is taken as soon as it arrives
            batch: list[Message | None] = list(consumer.consume(500, 0)) or [consumer.poll(0.1)]
            for message in batch:
                if message is None or message.error():
                    continue
                last = time.time()
                latencies.append((last - float(message.key() or b"0")) * 1000)
        results.put({"latencies": latencies, "last": last, "cpu": time.process_time() - cpu})
    consumer.close()


# -- the sending side (this process) ---------------------------------------------------------


async def mesh_send(sidecar: Sidecar, count: int, rate: float | None) -> tuple[float, float]:
    """Send ``count`` messages (paced at ``rate``/s, or as fast as possible); (start, cpu)."""
    window = asyncio.Semaphore(WINDOW)

    async def one(i: int) -> None:
        try:
            await sidecar.send("bench-b", text=TEXT, data={"t": time.time(), "seq": i})
        finally:
            window.release()

    sends: list[asyncio.Task[None]] = []
    started, cpu = time.time(), time.process_time()
    for i in range(count):
        if rate is not None:
            await asyncio.sleep(max(0.0, started + i / rate - time.time()))
        await window.acquire()
        sends.append(asyncio.create_task(one(i)))
    await asyncio.gather(*sends)
    return started, time.process_time() - cpu


def raw_send(
    producer: Producer, topic: str, payload: bytes, count: int, rate: float | None
) -> tuple[float, float]:
    started, cpu = time.time(), time.process_time()
    for i in range(count):
        if rate is not None:
            time.sleep(max(0.0, started + i / rate - time.time()))
        while True:
            try:
                producer.produce(topic, payload, repr(time.time()).encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    return started, time.process_time() - cpu


class Peer:
    """A receiving process and its command/result queues."""

    def __init__(self, target: Any, settings: Settings, bootstrap: str, *setup: Any) -> None:
        ctx = mp.get_context("spawn")
        self.commands, self.results = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(
            target=target, args=(settings, bootstrap, self.commands, self.results), daemon=True
        )
        self.process.start()
        for command in setup:
            self.commands.put(command)
        if self.results.get(timeout=120) != "ready":
            raise RuntimeError("the receiving process did not start")

    def ask(self, command: Any) -> dict[str, Any]:
        self.commands.put(command)
        return self.answer()

    def answer(self) -> dict[str, Any]:
        """The next result; a receiving process that died raises here instead of hanging."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                result: dict[str, Any] = self.results.get(timeout=1)
                return result
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError(f"receiver exited ({self.process.exitcode})") from None
        raise TimeoutError("the receiving process gave no result in 600 s")

    def close(self) -> None:
        self.commands.put(None)
        self.process.join(60)


def summary(started: float, sent_cpu: float, taken: dict[str, Any], count: int) -> dict[str, float]:
    latencies = taken["latencies"]
    return {
        "rate": count / (taken["last"] - started),
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "cpu_us": (sent_cpu + taken["cpu"]) / count * 1e6,
        "sender_cpu_us": sent_cpu / count * 1e6,
        "receiver_cpu_us": taken["cpu"] / count * 1e6,
    }


# -- profile and component costs -------------------------------------------------------------

# Walking out from the innermost frame, the first match names the bucket. Sidecar and
# codec frames come last so that what they call is charged to what it is.
_BUCKETS = (
    ("/nacl/", "crypto"),
    ("/cryptography/", "crypto"),
    ("/mesh/identity.py", "crypto"),
    ("/fastavro/", "serde"),
    ("/orjson", "serde"),
    ("/json/", "serde"),
    ("/mesh/serde/", "serde"),
    ("/mesh/envelope.py", "serde"),
    ("/aiokafka/", "client"),
    ("/kafka/", "client"),
)


def spy(pid: int, crypto: str) -> Spy:
    return Spy(pid, [(n, crypto if b == "crypto" else b) for n, b in _BUCKETS])


def cost_split(shares: dict[str, float], cpu_us: float) -> dict[str, float]:
    """Microseconds of CPU per message by bucket: sampled shares of the measured CPU."""
    return {bucket: share * cpu_us for bucket, share in shares.items()}


def component_costs(codec: MessageCodec, key: AgentKey) -> dict[str, float]:
    """Microseconds per message of each step on the benchmark's own message (median of 5)."""
    body = message_body(TEXT, {"t": time.time(), "seq": 1})
    envelope = new_envelope("bench-a", "bench-b")
    sealed = codec.seal(envelope, MESSAGE_SUBJECT, body, key)
    opened = codec.open(sealed, verify=False)
    data = hashlib.sha256(sealed).digest() * 2
    steps: dict[str, Callable[[], object]] = {
        "validate": lambda: codec.serde.validate(MESSAGE_SUBJECT, body),
        "seal (encode + sign)": lambda: codec.seal(envelope, MESSAGE_SUBJECT, body, key),
        "sign": lambda: key.sign(sealed),
        "open (decode)": lambda: codec.open(sealed, verify=False),
        "verify": lambda: opened.verify(key.public_bytes),
        "ed25519 verify": lambda: verify_signature(key.public_bytes, key.sign(data), data, "x"),
        "sha256 (64 B)": lambda: hashlib.sha256(data).digest(),
    }
    costs = {}
    for name, step in steps.items():
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(500):
                step()
            runs.append((time.perf_counter() - t0) / 500 * 1e6)
        costs[name] = statistics.median(runs)
    costs["ed25519 verify"] -= costs["sign"]  # that step signs too, to have a fresh signature
    costs["message bytes"] = float(len(sealed))
    return costs


def amortized(costs: dict[str, float], batch: int) -> float:
    """Projected verification per message with one signature per ``batch`` (Merkle proofs)."""
    return costs["ed25519 verify"] / batch + math.log2(batch) * costs["sha256 (64 B)"]


# -- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def registry_running(settings: Settings, bootstrap: str, codec: MessageCodec) -> Iterator[None]:
    """The registry processor, in a thread, until both agents know each other's keys.

    It stops before the measured rounds: the figures are of the sidecar pair alone, as in
    production where the processors run in their own processes (``mesh up``), not beside the
    agents on this 2-core machine.
    """
    engine = Engine.keyed(
        RegistryProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec
    )
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, kwargs={"until": stop.is_set})
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def raw_topic(settings: Settings, bootstrap: str) -> str:
    """An inbox nobody reads but the raw consumer: the same topic config as the mesh path's."""
    spec = inbox_topic("bench-raw")
    TopicAdmin(Cluster(settings, bootstrap)).ensure([spec])
    return f"{settings.topic_prefix}{spec.name}"


async def run(settings: Settings, bootstrap: str, codec: MessageCodec) -> dict[str, Any]:
    mesh_peer = Peer(mesh_receiver, settings, bootstrap)
    topic = raw_topic(settings, bootstrap)
    raw_peer = Peer(raw_receiver, settings, bootstrap, (topic, settings.partitions))
    sender = Sidecar(Cluster(settings, bootstrap), codec.serde, AgentSpec("bench-a"))
    await sender.start()
    producer = Producer(producer_config(Cluster(settings, bootstrap)))
    payload = codec.seal(
        new_envelope("bench-a", "bench-b"),
        MESSAGE_SUBJECT,
        message_body(TEXT, {"t": time.time(), "seq": 0}),
        sender.key,
    )
    out: dict[str, Any] = {"mesh": {}, "raw": {}}
    try:
        with registry_running(settings, bootstrap, codec):
            while "bench-b" not in sender.agents():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            warm = asyncio.create_task(mesh_send(sender, 500, None))
            await asyncio.to_thread(mesh_peer.ask, 500)
            await warm
        raw_peer.commands.put(500)
        await asyncio.to_thread(raw_send, producer, topic, payload, 500, None)
        raw_peer.answer()
        for round_ in range(ROUNDS):
            for phase, count, rate in (
                ("throughput", THROUGHPUT_N, None),
                ("latency", int(RATE * SECONDS), float(RATE)),
            ):
                sending = asyncio.create_task(mesh_send(sender, count, rate))
                taken = await asyncio.to_thread(mesh_peer.ask, count)
                started, cpu = await sending
                mesh = summary(started, cpu, taken, count)
                out["mesh"].setdefault(phase, []).append(mesh)
                raw_peer.commands.put(count)
                started, cpu = await asyncio.to_thread(
                    raw_send, producer, topic, payload, count, rate
                )
                raw = summary(started, cpu, raw_peer.answer(), count)
                out["raw"].setdefault(phase, []).append(raw)
                print(
                    f"round {round_ + 1} {phase}: mesh {mesh['rate']:,.0f}/s p50 {mesh['p50']:.1f} "
                    f"p99 {mesh['p99']:.1f} ms | raw {raw['rate']:,.0f}/s p50 {raw['p50']:.1f} "
                    f"p99 {raw['p99']:.1f} ms"
                )
        spies = {
            "sender": spy(os.getpid(), "signing"),
            "receiver": spy(mesh_peer.process.pid or 0, "verification"),
        }
        await asyncio.sleep(1.0)  # attached
        sending = asyncio.create_task(mesh_send(sender, PROFILED, None))
        await asyncio.to_thread(mesh_peer.ask, PROFILED)
        await sending
        for side, watcher in spies.items():
            out[f"profile_{side}"] = shares(watcher.stop())
    finally:
        await sender.stop()
        mesh_peer.close()
        raw_peer.close()
    return out


def med(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> None:
    with mesh_on_fresh_topics("msg", 3) as (settings, bootstrap, codec):
        out = asyncio.run(run(settings, bootstrap, codec))
        costs = component_costs(codec, AgentKey.generate("bench-a"))
    mesh, raw = out["mesh"], out["raw"]
    figures: dict[str, object] = {
        "rounds": ROUNDS,
        "throughput messages per round": THROUGHPUT_N,
        "mesh throughput (msg/s, median)": med(mesh["throughput"], "rate"),
        "raw throughput (msg/s, median)": med(raw["throughput"], "rate"),
        f"mesh latency p50 at {RATE}/s (ms, median)": med(mesh["latency"], "p50"),
        f"mesh latency p99 at {RATE}/s (ms, median)": med(mesh["latency"], "p99"),
        f"mesh latency p99 at {RATE}/s (ms, worst round)": max(r["p99"] for r in mesh["latency"]),
        f"raw latency p50 at {RATE}/s (ms, median)": med(raw["latency"], "p50"),
        f"raw latency p99 at {RATE}/s (ms, median)": med(raw["latency"], "p99"),
        "mesh CPU per message, both sides (us)": med(mesh["throughput"], "cpu_us"),
        "raw CPU per message, both sides (us)": med(raw["throughput"], "cpu_us"),
        "message size (bytes)": int(costs["message bytes"]),
    }
    for side in ("sender", "receiver"):
        cpu_us = med(mesh["throughput"], f"{side}_cpu_us")
        figures[f"mesh {side} CPU per message (us)"] = cpu_us
        for bucket, us in sorted(cost_split(out[f"profile_{side}"], cpu_us).items()):
            figures[f"profile {side}: {bucket} (us/msg)"] = us
    for step in ("validate", "seal (encode + sign)", "sign", "open (decode)", "verify"):
        figures[f"step: {step} (us)"] = costs[step]
    figures["ed25519 verify alone (us)"] = costs["ed25519 verify"]
    figures["sha256 of 64 B (us)"] = costs["sha256 (64 B)"]
    for batch in (16, 64, 256):
        figures[f"projected verify per message, 1 signature per {batch} (us)"] = amortized(
            costs, batch
        )
    for k, v in figures.items():
        print(f"{k}: {v:,.1f}" if isinstance(v, float) else f"{k}: {v}")
    ratios = {
        "mesh throughput / raw throughput": med(mesh["throughput"], "rate")
        / med(raw["throughput"], "rate"),
        "mesh throughput / target 5,000 msg/s": med(mesh["throughput"], "rate") / 5000,
        "mesh p50 / raw p50": med(mesh["latency"], "p50") / med(raw["latency"], "p50"),
        "mesh p99 / raw p99": med(mesh["latency"], "p99") / med(raw["latency"], "p99"),
        "mesh p99 / target 20 ms": med(mesh["latency"], "p99") / 20,
        "ed25519 verify / projected with 1 signature per 64": costs["ed25519 verify"]
        / amortized(costs, 64),
    }
    path = write_results(
        "messaging",
        figures,
        ratios,
        f"{ROUNDS} interleaved rounds; sender and receiver sidecars in two processes; "
        f"throughput = {THROUGHPUT_N} messages, first send to last taken; latency at {RATE}/s "
        f"for {SECONDS:.0f}s, send called to taken by the receiving agent; raw = confluent-kafka "
        "producer and consumer (two processes) moving same-size bytes; profile = each side's "
        f"CPU per message split by the shares of py-spy samples over a {PROFILED:,}-message "
        "run.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
