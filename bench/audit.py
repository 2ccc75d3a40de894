"""Audit benchmark, on one broker, in one run.

1. Throughput, interleaved over rounds (fresh topics each round, the same pre-produced input of
   signed-envelope-sized records spread over the fixed audited topics): the raw
   confluent-kafka passthrough (consume -> produce the same bytes), the transactional
   passthrough, and the audit processor (hash, chain, sign each link with the mesh's key,
   encode, in 20 ms transactions).
2. Verification: what ``mesh audit verify`` runs (read, decode, re-hash and check every link,
   its signature, and the source record it names) in records/s, against plain SHA-256 over the
   same original bytes in memory.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._kafka import interleaved_rounds, passthrough, produce
from bench._report import median, write_results
from mesh.adapters.audit.log import AuditLog, Claims, verify_log
from mesh.adapters.audit.sources import check_sources
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.source import acquire_broker
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.settings import Cluster, Settings, load_settings
from processors.audit import AUDITED, AuditProcessor
from processors.runtime.engine import Engine

#: The mesh's key for the bench: the audit processor signs every link with it, and verify
#: checks every signature, as `mesh audit verify` does.
MESH = AgentKey.generate("mesh")
PER_TOPIC = 5_000
ROUNDS = 3
SIZE = 673  # a signed envelope with a typical body (bench/serde.py)


def fill(settings: Settings, bootstrap: str) -> None:
    for topic in AUDITED:
        events = [(f"agent-{i % 500}".encode(), os.urandom(SIZE)) for i in range(PER_TOPIC)]
        produce(settings, bootstrap, topic, events)


def audit_rate(settings: Settings, bootstrap: str, serde: Serde, total: int) -> float:
    codec = MessageCodec(serde, PublicKeys())
    engine = Engine.keyed(AuditProcessor(MESH), Cluster(settings, bootstrap), codec)
    first: list[float] = []

    def finished() -> bool:
        if engine.metrics.records_in and not first:
            first.append(time.perf_counter())
        return engine.metrics.records_in >= total

    engine.run(until=finished)
    return total / (time.perf_counter() - first[0])


def verify_rates(settings: Settings, bootstrap: str, serde: Serde) -> dict[str, float]:
    log = AuditLog(Cluster(settings, bootstrap), serde)
    started = time.perf_counter()
    claims: Claims = {}
    results = verify_log(log, public_key=MESH.public_bytes, claims=claims)
    sources = check_sources(Cluster(settings, bootstrap), claims)
    verify_s = time.perf_counter() - started
    assert all(r.problem is None and not r.foreign for r in results), [
        str(r.problem) for r in results
    ]
    assert sources.problems == [] and sources.checked == sum(r.records for r in results)
    records = sum(r.records for r in results)
    originals = [e.link.original or b"" for p in log.partitions() for e in log.entries(p) if e.link]
    started = time.perf_counter()
    for value in originals:
        hashlib.sha256(value).digest()
    sha_s = time.perf_counter() - started
    return {
        "verify: records": records,
        "verify: mesh audit verify (records/s)": records / verify_s,
        "verify: plain SHA-256 over the same bytes (records/s)": len(originals) / sha_s,
    }


def main() -> None:
    base = load_settings().with_overrides(partitions=6)
    lease = acquire_broker(base)
    bootstrap = lease.bootstrap
    schema_settings = base.with_overrides(topic_prefix="bench.audit.")
    TopicAdmin(Cluster(schema_settings, bootstrap)).ensure()
    registry = KafkaRegistry(Cluster(schema_settings, bootstrap))
    serde = Serde(registry)
    serde.register_all()
    total = PER_TOPIC * len(AUDITED)
    sources = list(AUDITED)
    try:
        rates, last = interleaved_rounds(
            base,
            bootstrap,
            "audit",
            ROUNDS,
            lambda s: fill(s, bootstrap),
            {
                "raw passthrough": lambda s: passthrough(s, bootstrap, sources, total, False),
                "transactional passthrough": lambda s: passthrough(
                    s, bootstrap, sources, total, True
                ),
                "audit processor": lambda s: audit_rate(s, bootstrap, serde, total),
            },
        )
        m = {k: median(v) for k, v in rates.items()}
        figures: dict[str, object] = {f"{k} (records/s, median)": v for k, v in m.items()}
        figures |= {"records per round": total, "record size (bytes)": SIZE, "rounds": ROUNDS}
        verification = verify_rates(last, bootstrap, serde)
        figures |= verification
        for k, v in verification.items():
            print(f"{k}: {v:,.0f}")
    finally:
        registry.close()
        lease.release()
    ratios = {
        "audit processor / raw passthrough": m["audit processor"] / m["raw passthrough"],
        "audit processor / transactional passthrough": m["audit processor"]
        / m["transactional passthrough"],
        "mesh audit verify / plain SHA-256": verification["verify: mesh audit verify (records/s)"]
        / verification["verify: plain SHA-256 over the same bytes (records/s)"],
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    path = write_results(
        "audit",
        figures,
        ratios,
        f"{total} records of {SIZE} B over the {len(AUDITED)} fixed audited topics, 6 "
        "partitions; verify reads the last audit processor round's log back from Kafka.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
