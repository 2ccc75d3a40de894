"""The bad-input corpus (issue 15): every way a record can be wrong, built against a real
schema registry, with the reason codes the mesh must give it.

Each :class:`Case` is raw bytes to produce onto a topic (a processor's input, an agent's
inbox) and the dead-letter reason codes that are right for it. Built per run, since schema ids
and agent keys are the run's own: ``bytes_cases`` need only the codec, ``signed_cases`` a
registered sender (``who``, with its key) and an event of the topic's subject to wrap.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from mesh.adapters.serde.messages import MessageCodec
from mesh.adapters.serde.wire import frame
from mesh.domain.envelope import Envelope, RecipientKind, new_envelope
from mesh.domain.identity import AgentKey

__all__ = ["Case", "bytes_cases", "inbox_cases", "signed_cases"]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes
    codes: frozenset[str]
    #: The record key to produce it under (None: the topic's usual key, the sender's id).
    key: str | None = None


def _case(name: str, value: bytes, *codes: str, key: str | None = None) -> Case:
    return Case(name, value, frozenset(codes), key)


def bytes_cases(codec: MessageCodec, good: bytes, max_bytes: int) -> list[Case]:
    """Bytes that are not a record at all, or not one record whole: ``good`` is a valid
    sealed record of the topic, cut and glued."""
    return [
        _case("too short for a header", b"\x00\x01", "malformed"),
        _case("plain JSON, not wire format", b'{"plain": "json"}', "wrong_magic_byte"),
        _case("wrong magic byte", b"\x07" + good[1:], "wrong_magic_byte"),
        _case(
            "unknown schema id",
            b"\x00" + struct.pack(">I", 987_654) + b"\x02ab",
            "unknown_schema_id",
        ),
        _case("truncated body", good[: len(good) // 2], "truncated_body"),
        _case("trailing bytes", good + b"\x00junk", "truncated_body"),
        _case("oversize", b"\x00" + b"x" * (max_bytes + 10), "oversize"),
    ]


def signed_cases(
    codec: MessageCodec,
    who: AgentKey,
    subject: str,
    body: dict[str, Any],
    recipient: str = "",
    kind: RecipientKind = RecipientKind.BROADCAST,
) -> list[Case]:
    """Well-formed records that must not be believed: forged, unsigned, from a stranger, a
    bare body where an envelope belongs, a nested field no schema names."""
    envelope = new_envelope(who.agent_id, recipient, recipient_kind=kind)
    impostor = AgentKey.generate(who.agent_id)
    stranger = AgentKey.generate("corpus-stranger")
    strange_body = {**body, "agent_id": "corpus-stranger"} if "agent_id" in body else body
    return [
        _case("forged signature", codec.seal(envelope, subject, body, impostor), "bad_signature"),
        _case("missing signature", codec.seal(envelope, subject, body, None), "bad_signature"),
        _case(
            "unregistered sender",
            codec.seal(
                envelope._replace(sender="corpus-stranger"), subject, strange_body, stranger
            ),
            "unknown_sender",
            key="corpus-stranger",
        ),
        _case(
            "a bare body where an envelope belongs",
            codec.serde.encode(subject, body),
            "bad_signature",
        ),
        _case(
            "an envelope from an unknown version",
            _foreign_envelope(codec, envelope, who),
            "unknown_field",
        ),
    ]


def inbox_cases(codec: MessageCodec, who: AgentKey, recipient: str, skew_ms: int) -> list[Case]:
    """What only a receiving sidecar can judge: replays and absurd times, a nested field no
    schema names in the body, a hop count over the limit of the sender's operator policy (one
    must be in force for it: the fleet default's limit is 10)."""
    body = {"role": "AGENT", "parts": [{"kind": "TEXT", "text": "x"}], "metadata": {}}
    made = new_envelope(who.agent_id, recipient)
    old = made._replace(created_at_ms=made.created_at_ms - 2 * skew_ms)
    future = made._replace(created_at_ms=made.created_at_ms + 2 * skew_ms)
    return [
        _case("a replayed message", codec.seal(old, "mesh.a2a.Message", body, who), "replayed"),
        _case(
            "a time in the future", codec.seal(future, "mesh.a2a.Message", body, who), "replayed"
        ),
        _case("an unknown nested field", _smuggled(codec, made, who), "unknown_field"),
        _case(
            "a hop count over the limit",
            codec.seal(made._replace(hop_count=50), "mesh.a2a.Message", body, who),
            "policy_violation",
        ),
    ]


def _smuggled(codec: MessageCodec, envelope: Envelope, who: AgentKey) -> bytes:
    schema = json.loads((SCHEMAS / "mesh.a2a.Message" / "v1.avsc").read_text())
    schema["fields"][1]["type"]["items"]["fields"].append(
        {"name": "exfil", "type": "string", "default": ""}
    )
    schema_id = codec.serde.registry.register("mesh.a2a.Message", json.dumps(schema)).schema_id
    out = io.BytesIO()
    record = {"role": "AGENT", "metadata": {}, "parts": [{"kind": "TEXT", "exfil": "secret"}]}
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return codec.seal_framed(envelope, frame(schema_id, out.getvalue()), who)


def _foreign_envelope(codec: MessageCodec, envelope: Envelope, who: AgentKey) -> bytes:
    """An envelope written with a schema outside the catalogue that adds a field."""
    schema = json.loads((SCHEMAS / "mesh.Envelope" / "v1.avsc").read_text())
    schema["fields"].insert(0, {"name": "smuggled", "type": "string", "default": ""})
    schema_id = codec.serde.registry.register("mesh.Envelope", json.dumps(schema)).schema_id
    record = envelope.to_record(codec.serde.encode("mesh.registry.Heartbeat", {
        "agent_id": who.agent_id, "instance_id": "i", "sequence": 1}))  # fmt: skip
    record["smuggled"] = "x"
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return frame(schema_id, out.getvalue())
