"""Serde benchmark: the mesh's envelope+body path against plain fastavro on the same records.

Paths, interleaved in every round so machine noise hits them alike:

* plain fastavro: ``schemaless_writer`` of the body, then of the envelope holding it; decode
  is ``schemaless_reader`` of both (no framing, no registry lookups, no objects built);
* mesh, unsigned: ``MessageCodec.seal(key=None)`` / ``open(verify=False)`` - wire framing,
  schema ids from the embedded registry on Kafka, the Envelope value object;
* mesh, signed: ``seal(key)`` / ``open()`` - the same plus Ed25519 sign / verify.

Target: mesh unsigned >= 60% of plain fastavro's rate for both encode and decode.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastavro

from bench._report import median, write_results
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.source import acquire_broker
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.avro import parse
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.contracts import latest
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import SCHEMAS
from mesh.settings import Cluster, load_settings

RECORDS = 5_000
ROUNDS = 7
BODY_SUBJECT = "mesh.a2a.Message"


def records(n: int) -> list[tuple[Envelope, dict[str, Any]]]:
    """Envelopes with a typical agent message: a paragraph of text and a small JSON part."""
    out = []
    for i in range(n):
        envelope = Envelope(
            message_id=f"00000000-0000-4000-8000-{i:012d}",
            conversation_id=f"conv-{i % 97}",
            correlation_id=f"corr-{i % 89}",
            sender="research",
            recipient_kind=RecipientKind.AGENT,
            recipient="drafting",
            created_at_ms=1_790_000_000_000 + i,
            hop_count=i % 5,
            task_id=f"task-{i % 101}",
            causation_id=f"00000000-0000-4000-8000-{i - 1:012d}" if i else None,
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        body = {
            "role": "AGENT",
            "parts": [
                {"kind": "TEXT", "text": f"Findings for task {i}: " + "the market grew. " * 20},
                {
                    "kind": "DATA",
                    "data_json": '{"sources": 4, "confidence": 0.82}',
                    "mime_type": "application/json",
                },
            ],
            "metadata": {"step": "research"},
        }
        out.append((envelope, body))
    return out


def rate(work: Callable[[], None], count: int) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def main() -> None:
    settings = load_settings().with_overrides(topic_prefix="bench.serde.")
    lease = acquire_broker(settings)
    TopicAdmin(Cluster(settings, lease.bootstrap)).ensure()
    registry = KafkaRegistry(Cluster(settings, lease.bootstrap))
    try:
        run(Serde(registry), f"{settings.topic_prefix}{SCHEMAS} on {lease.bootstrap}")
    finally:
        registry.close()
        lease.release()


def run(serde: Serde, where: str) -> None:
    key = AgentKey.generate("research")
    codec = MessageCodec(serde, PublicKeys({"research": key.public_bytes}))
    data = records(RECORDS)
    envelope_schema = parse(latest("mesh.Envelope").schema)
    body_schema = parse(latest(BODY_SUBJECT).schema)

    def plain_encode() -> list[bytes]:
        out = []
        for envelope, body in data:
            b = io.BytesIO()
            fastavro.schemaless_writer(b, body_schema, body)
            e = io.BytesIO()
            fastavro.schemaless_writer(e, envelope_schema, envelope.to_record(b.getvalue()))
            out.append(e.getvalue())
        return out

    def plain_decode(encoded: list[bytes]) -> None:
        for value in encoded:
            record: Any = fastavro.schemaless_reader(io.BytesIO(value), envelope_schema, None)
            fastavro.schemaless_reader(io.BytesIO(record["body"]), body_schema, None)

    def mesh_encode(signing: AgentKey | None) -> list[bytes]:
        return [codec.seal(e, BODY_SUBJECT, b, signing) for e, b in data]

    def mesh_decode(encoded: list[bytes], verify: bool) -> None:
        for value in encoded:
            codec.open(value, verify=verify)

    plain_bytes, unsigned_bytes, signed_bytes = plain_encode(), mesh_encode(None), mesh_encode(key)
    rates: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for name, work in (
            ("plain fastavro encode", plain_encode),
            ("mesh encode (unsigned)", lambda: mesh_encode(None)),
            ("mesh encode + sign", lambda: mesh_encode(key)),
            ("plain fastavro decode", lambda: plain_decode(plain_bytes)),
            ("mesh decode (unverified)", lambda: mesh_decode(unsigned_bytes, False)),
            ("mesh verify + decode", lambda: mesh_decode(signed_bytes, True)),
        ):
            rates.setdefault(name, []).append(rate(work, RECORDS))  # type: ignore[arg-type]

    figures: dict[str, object] = {f"{k} (records/s, median)": median(v) for k, v in rates.items()}
    m = {k: median(v) for k, v in rates.items()}
    figures["records per round"] = RECORDS
    figures["rounds"] = ROUNDS
    figures["mesh message size (bytes, signed)"] = len(signed_bytes[0])
    figures["plain message size (bytes)"] = len(plain_bytes[0])
    figures["signing cost per message (us)"] = (
        1e6 / m["mesh encode + sign"] - 1e6 / m["mesh encode (unsigned)"]
    )
    figures["verification cost per message (us)"] = (
        1e6 / m["mesh verify + decode"] - 1e6 / m["mesh decode (unverified)"]
    )
    ratios = {
        "mesh encode / plain encode (target >= 0.60)": m["mesh encode (unsigned)"]
        / m["plain fastavro encode"],
        "mesh decode / plain decode (target >= 0.60)": m["mesh decode (unverified)"]
        / m["plain fastavro decode"],
        "mesh encode+sign / plain encode": m["mesh encode + sign"] / m["plain fastavro encode"],
        "mesh verify+decode / plain decode": m["mesh verify + decode"] / m["plain fastavro decode"],
    }
    path = write_results("serde", figures, ratios, f"Schema ids from the registry at {where}.")
    for k, v in figures.items():
        print(f"{k:>45}: {v:,.1f}" if isinstance(v, float) else f"{k:>45}: {v}")
    for k, v in ratios.items():
        print(f"{k:>45}: {v:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
