"""Registry processor benchmark, on one broker, in one run.

1. Throughput, interleaved over rounds (fresh topics each round, same pre-produced input):
   * raw passthrough: confluent-kafka consume -> produce the same bytes (idempotent producer,
     offsets committed every 500 records), no decoding;
   * transactional passthrough: the same inside transactions with
     ``send_offsets_to_transaction`` every 20 ms (what exactly-once alone costs);
   * the registry processor: decode, verify the Ed25519 signature, fold, encode, in the
     same 20 ms transactions.
   Target: the registry processor at >= 50% of the raw passthrough.
2. Sustained: 10,000 agents register, then each heartbeats every 5 s (2,000 events/s) from a
   separate load-generator process; the registry's lag (record timestamp to the transaction
   that holds its output committing) is recorded per batch. Target: max lag < 1 s.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer

from bench._kafka import fresh_topics, interleaved_rounds, passthrough, produce
from bench._report import median, write_results
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.kafka.source import acquire_broker
from mesh.adapters.keyfiles import mesh_key
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import REGISTRY_EVENTS
from mesh.settings import Cluster, Settings, load_settings
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine

EVENTS = 20_000
AGENTS = 200
ROUNDS = 3
FLEET = 10_000
HEARTBEAT_EVERY_S = 5.0
SUSTAIN_S = 60.0
SOURCES = [REGISTRY_EVENTS]


def sealed_events(codec: MessageCodec, agents: int, total: int) -> list[tuple[bytes, bytes]]:
    keys = [AgentKey.generate(f"agent-{i:05d}") for i in range(agents)]
    now = int(time.time() * 1000) + 3_600_000  # ahead, so nobody goes stale mid-run
    out = []
    for i in range(total):
        key = keys[i % agents]
        if i < agents:
            subject, body = "mesh.registry.AgentRegistered", _registration(key)
        else:
            subject, body = (
                "mesh.registry.Heartbeat",
                {"agent_id": key.agent_id, "instance_id": "i", "sequence": i},
            )
        envelope = Envelope(f"m{i}", "c", "c", key.agent_id, RecipientKind.BROADCAST, "", now + i)
        out.append((key.agent_id.encode(), codec.seal(envelope, subject, body, key)))
    return out


def _registration(key: AgentKey) -> dict[str, object]:
    return {
        "agent_id": key.agent_id,
        "owner": "bench",
        "version": "1",
        "public_key": key.public_bytes,
        "agent_card_json": '{"name": "bench"}',
    }


def processor_rate(settings: Settings, bootstrap: str, codec: MessageCodec, total: int) -> float:
    engine = Engine.keyed(
        RegistryProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec
    )
    first: list[float] = []

    def finished() -> bool:
        if engine.metrics.records_in and not first:
            first.append(time.perf_counter())
        return engine.metrics.records_in >= total

    engine.run(until=finished)
    return total / (time.perf_counter() - first[0])


def load_generator(
    settings: Settings, bootstrap: str, seconds: float, registered: object, go: object
) -> None:
    """A separate process: register FLEET agents, then (on ``go``) heartbeat each every 5 s."""
    registry = KafkaRegistry(Cluster(settings, bootstrap))
    codec = MessageCodec(Serde(registry), PublicKeys())
    keys = [AgentKey.generate(f"fleet-{i:05d}") for i in range(FLEET)]
    producer = Producer(producer_config(Cluster(settings, bootstrap)))
    topic = f"{settings.topic_prefix}{REGISTRY_EVENTS}"

    def send(key: AgentKey, subject: str, body: dict[str, object], n: int) -> None:
        envelope = Envelope(
            f"{key.agent_id}-{n}",
            "c",
            "c",
            key.agent_id,
            RecipientKind.BROADCAST,
            "",
            int(time.time() * 1000),
        )
        while True:
            try:
                producer.produce(
                    topic, codec.seal(envelope, subject, body, key), key.agent_id.encode()
                )
                return
            except BufferError:
                producer.poll(0.05)

    for key in keys:
        send(key, "mesh.registry.AgentRegistered", _registration(key), 0)
    producer.flush(60)
    registered.set()  # type: ignore[attr-defined]
    go.wait(300)  # type: ignore[attr-defined]
    interval = HEARTBEAT_EVERY_S / FLEET
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        key = keys[n % FLEET]
        send(
            key,
            "mesh.registry.Heartbeat",
            {"agent_id": key.agent_id, "instance_id": "i", "sequence": n},
            n + 1,
        )
        n += 1
        producer.poll(0)
        lag_behind = started + n * interval - time.monotonic()
        if lag_behind > 0:
            time.sleep(lag_behind)
    producer.flush(60)
    registry.close()


def sustained(settings: Settings, bootstrap: str, codec: MessageCodec) -> dict[str, float]:
    ready, go = multiprocessing.Event(), multiprocessing.Event()
    generator = multiprocessing.Process(
        target=load_generator, args=(settings, bootstrap, SUSTAIN_S, ready, go)
    )
    generator.start()
    ready.wait(300)  # registrations are in; measure only the heartbeat phase
    engine = Engine.keyed(
        RegistryProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec
    )
    engine.start()
    while engine.metrics.records_in < FLEET:  # fold the registrations first
        engine.step()
    go.set()
    engine.metrics.commit_delays_ms.clear()
    engine.metrics.max_commit_delay_ms = 0
    before, started = engine.metrics.records_in, time.monotonic()
    while generator.is_alive():
        engine.step()
    for _ in range(200):  # drain what is left
        engine.step()
    elapsed = time.monotonic() - started
    heartbeats = engine.metrics.records_in - before
    delays = sorted(engine.metrics.commit_delays_ms)
    engine.stop()
    generator.join()
    return {
        "sustained: heartbeats processed": heartbeats,
        "sustained: heartbeats/s": heartbeats / elapsed,
        "sustained: lag p50 (ms)": float(statistics.median(delays)),
        "sustained: lag p99 (ms)": float(delays[int(len(delays) * 0.99) - 1]),
        "sustained: max lag (ms)": float(delays[-1]),
        "sustained: batches": len(delays),
    }


def main() -> None:
    base = load_settings().with_overrides(partitions=6)
    lease = acquire_broker(base)
    bootstrap = lease.bootstrap
    schema_settings = base.with_overrides(topic_prefix="bench.reg.")
    TopicAdmin(Cluster(schema_settings, bootstrap)).ensure()
    registry = KafkaRegistry(Cluster(schema_settings, bootstrap))
    serde = Serde(registry)
    serde.register_all()
    codec = MessageCodec(serde, PublicKeys())
    events = sealed_events(codec, AGENTS, EVENTS)
    try:
        rates, _ = interleaved_rounds(
            base,
            bootstrap,
            "reg",
            ROUNDS,
            lambda s: produce(s, bootstrap, REGISTRY_EVENTS, events),
            {
                "raw passthrough": lambda s: passthrough(s, bootstrap, SOURCES, EVENTS, False),
                "transactional passthrough": lambda s: passthrough(
                    s, bootstrap, SOURCES, EVENTS, True
                ),
                "registry processor": lambda s: processor_rate(s, bootstrap, codec, EVENTS),
            },
        )
        m = {k: median(v) for k, v in rates.items()}
        figures: dict[str, object] = {f"{k} (records/s, median)": v for k, v in m.items()}
        figures |= {"events per round": EVENTS, "rounds": ROUNDS, "partitions": 6}
        sustained_figures = sustained(fresh_topics(base, bootstrap, "reg"), bootstrap, codec)
        figures |= sustained_figures
        for k, v in sustained_figures.items():
            print(f"{k}: {v:,.1f}")
    finally:
        registry.close()
        lease.release()
    ratios = {
        "registry processor / raw passthrough (target >= 0.50)": m["registry processor"]
        / m["raw passthrough"],
        "registry processor / transactional passthrough": m["registry processor"]
        / m["transactional passthrough"],
        "transactional / raw passthrough": m["transactional passthrough"] / m["raw passthrough"],
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    path = write_results(
        "registry",
        figures,
        ratios,
        f"{FLEET} agents x 1 heartbeat / {HEARTBEAT_EVERY_S:.0f}s for "
        f"{SUSTAIN_S:.0f}s; lag = record timestamp to its output committed.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
