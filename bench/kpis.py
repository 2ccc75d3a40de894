"""KPIs processor benchmark, on one broker, in one run.

Input: signed task events (REQUESTED, HANDED_OFF, COMPLETED) and model-call telemetry with a
cost, each made for a task (so each call's cost is re-keyed by task onto
``mesh.kpis.costs.v1`` and comes back: the processor reads it twice), from registered agents.
Interleaved over rounds, on fresh topics each round with the same pre-produced input:

* transactional passthrough: confluent-kafka consume -> produce the same bytes inside
  transactions with ``send_offsets_to_transaction`` every 20 ms (what exactly-once alone
  costs, committing as often as the processor does);
* the kpis processor: decode, verify the sender's Ed25519 signature against the registry's
  key, fold into the totals of three scopes and two buckets, re-key call costs, encode the
  state, in the same 20 ms transactions.

Rates are source records per second, first record to last. Target: the kpis processor at
>= 50% of the transactional passthrough.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._kafka import interleaved_rounds, passthrough, produce
from bench._report import median, write_results
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.source import acquire_broker
from mesh.adapters.keyfiles import control_signers, mesh_key
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.tasks import TASK_EVENT
from mesh.domain.topics import REGISTRY_EVENTS, TASKS, TELEMETRY
from mesh.settings import Cluster, Settings, load_settings
from processors.kpis import KpisProcessor
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine

TASK_COUNT = 4_000  # x 3 task events + 2 model calls = 20,000 source records
AGENTS = 20
ROUNDS = 3
SOURCES = [TASKS, TELEMETRY]
TELEMETRY_EVENT = "mesh.telemetry.TelemetryEvent"


def agents() -> list[AgentKey]:
    return [AgentKey.generate(f"agent-{i:03d}") for i in range(AGENTS)]


def registrations(codec: MessageCodec, keys: list[AgentKey]) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000)
    out = []
    for i, key in enumerate(keys):
        body = {"agent_id": key.agent_id, "owner": "bench", "version": "1",
                "public_key": key.public_bytes, "agent_card_json": '{"name": "bench"}'}  # fmt: skip
        envelope = Envelope(f"r{i}", "c", "c", key.agent_id, RecipientKind.BROADCAST, "", now)
        value = codec.seal(envelope, "mesh.registry.AgentRegistered", body, key)
        out.append((key.agent_id.encode(), value))
    return out


def kpi_inputs(
    codec: MessageCodec, keys: list[AgentKey]
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """(task events keyed by task, telemetry keyed by agent)."""
    now = int(time.time() * 1000)
    tasks: list[tuple[bytes, bytes]] = []
    telemetry: list[tuple[bytes, bytes]] = []
    for n in range(TASK_COUNT):
        task_id, by = f"task-{n:05d}", keys[n % AGENTS]
        for i, kind in enumerate(("REQUESTED", "HANDED_OFF", "COMPLETED")):
            body = {"task_id": task_id, "kind": kind, "actor": by.agent_id,
                    "workflow": "bench" if kind == "REQUESTED" else None,
                    "value_usd": 2.0 if kind == "COMPLETED" else None}  # fmt: skip
            value = _seal(codec, by, task_id, f"{task_id}-{i}", now + n, TASK_EVENT, body)
            tasks.append((task_id.encode(), value))
        for i in (3, 4):
            body = {"agent_id": by.agent_id, "kind": "MODEL_CALL", "name": "m",
                    "cost_usd": 0.01, "input_tokens": 900, "output_tokens": 200}  # fmt: skip
            value = _seal(codec, by, task_id, f"{task_id}-{i}", now + n, TELEMETRY_EVENT, body)
            telemetry.append((by.agent_id.encode(), value))
    return tasks, telemetry


def _seal(
    codec: MessageCodec,
    by: AgentKey,
    task_id: str,
    message_id: str,
    at_ms: int,
    subject: str,
    body: Mapping[str, object],
) -> bytes:
    envelope = Envelope(message_id, task_id, "corr", by.agent_id, RecipientKind.BROADCAST, "",
                        at_ms, task_id=task_id)  # fmt: skip
    return codec.seal(envelope, subject, body, by)


def fill(s: Settings, bootstrap: str, codec: MessageCodec, inputs: dict[str, object]) -> None:
    """Register the agents (the registry processor vouches for their keys), then the input."""
    produce(s, bootstrap, REGISTRY_EVENTS, inputs["registrations"])  # type: ignore[arg-type]
    registry = Engine.keyed(RegistryProcessor(mesh_key(s)), Cluster(s, bootstrap), codec)
    registry.run(until=lambda: registry.metrics.records_in >= AGENTS)
    produce(s, bootstrap, TASKS, inputs["tasks"])  # type: ignore[arg-type]
    produce(s, bootstrap, TELEMETRY, inputs["telemetry"])  # type: ignore[arg-type]


def processor_rate(s: Settings, bootstrap: str, codec: MessageCodec, sources: int) -> float:
    engine = Engine.keyed(
        KpisProcessor(codec.serde, control_signers(s)), Cluster(s, bootstrap), codec
    )
    calls = sources * 2 // 5  # every model call comes back once, re-keyed by its task
    first: list[float] = []

    def finished() -> bool:
        if engine.metrics.records_in and not first:
            first.append(time.perf_counter())
        return engine.metrics.records_in >= sources + calls

    engine.run(until=finished)
    skipped = engine.job.processor.skipped  # type: ignore[attr-defined]
    if skipped:
        raise SystemExit(f"the kpis processor skipped {skipped} records: the bench is invalid")
    return sources / (time.perf_counter() - first[0])


def main() -> None:
    base = load_settings().with_overrides(partitions=6)
    lease = acquire_broker(base)
    bootstrap = lease.bootstrap
    schema_settings = base.with_overrides(topic_prefix="bench.kpis.")
    TopicAdmin(Cluster(schema_settings, bootstrap)).ensure()
    registry = KafkaRegistry(Cluster(schema_settings, bootstrap))
    serde = Serde(registry)
    serde.register_all()
    codec = MessageCodec(serde, PublicKeys())
    keys = agents()
    tasks, telemetry = kpi_inputs(codec, keys)
    inputs: dict[str, object] = {
        "registrations": registrations(codec, keys), "tasks": tasks, "telemetry": telemetry,
    }  # fmt: skip
    sources = len(tasks) + len(telemetry)
    try:
        rates, _ = interleaved_rounds(
            base,
            bootstrap,
            "kpis",
            ROUNDS,
            lambda s: fill(s, bootstrap, codec, inputs),
            {
                "transactional passthrough": lambda s: passthrough(
                    s, bootstrap, SOURCES, sources, True
                ),
                "kpis processor": lambda s: processor_rate(s, bootstrap, codec, sources),
            },
        )
    finally:
        registry.close()
        lease.release()
    m = {k: median(v) for k, v in rates.items()}
    figures: dict[str, object] = {f"{k} (source records/s, median)": v for k, v in m.items()}
    figures |= {"source records per round": sources, "rounds": ROUNDS, "partitions": 6,
                "agents": AGENTS, "tasks": TASK_COUNT}  # fmt: skip
    ratios = {
        "kpis processor / transactional passthrough (target >= 0.50)": m["kpis processor"]
        / m["transactional passthrough"],
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    path = write_results(
        "kpis",
        figures,
        ratios,
        f"{TASK_COUNT} tasks x (3 signed task events + 2 model calls with a cost, each re-keyed "
        "by task), 20 ms transactions on both sides, same broker and bytes.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
