"""Audit records as JSON: the export line format, replay's decoded view, and filters (pure).

Export lines are self-contained (hashes hex, bytes base64) so an independent verifier can check
an export with the canonical form of ``docs/audit-format.md`` and nothing else.
"""

from __future__ import annotations

import base64
from typing import Any

from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.audit.chain import Link
from mesh.errors import MeshError

__all__ = ["decoded_view", "export_line", "involves"]


def export_line(link: Link, audit_offset: int) -> dict[str, Any]:
    key = link.source_key
    return {
        "audit_partition": link.audit_partition,
        "audit_offset": audit_offset,
        "sequence": link.sequence,
        "source_topic": link.source_topic,
        "source_partition": link.source_partition,
        "source_offset": link.source_offset,
        "source_timestamp": link.source_timestamp_ms,
        "source_key_b64": None if key is None else base64.b64encode(key).decode(),
        "value_sha256": link.value_sha256.hex(),
        "prev_hash": link.prev_hash.hex(),
        "record_hash": link.record_hash.hex(),
        "original_b64": base64.b64encode(link.original or b"").decode(),
    }


def decoded_view(link: Link, codec: MessageCodec) -> dict[str, Any]:
    """The source record as it was: envelope and body decoded (signatures not re-checked)."""
    view: dict[str, Any] = {
        "at": link.source_timestamp_ms,
        "source": f"{link.source_topic}[{link.source_partition}]@{link.source_offset}",
        "key": (link.source_key or b"").decode(errors="replace"),
        "audit": f"{link.audit_partition}:{link.sequence}",
    }
    if link.original is None:
        view["undecodable"] = "too large to keep: recorded by its SHA-256 alone"
        return view
    try:
        opened = codec.open(link.original, verify=False)
    except MeshError as exc:
        return _plain(view, link.original, codec, exc)
    envelope = opened.envelope
    view.update(
        message_id=envelope.message_id,
        sender=envelope.sender,
        recipient=envelope.recipient,
        task_id=envelope.task_id,
        causation_id=envelope.causation_id,
        subject=opened.body_subject,
        body={k: _jsonable(v) for k, v in opened.body.items()},
    )
    return view


def _plain(
    view: dict[str, Any], original: bytes, codec: MessageCodec, not_sealed: MeshError
) -> dict[str, Any]:
    """A record that is not a sealed message (a dead letter, a key statement): its Avro body
    as it is; bytes nothing decodes are shown as undecodable, with why."""
    try:
        decoded = codec.serde.decode(original)
    except MeshError:
        view["undecodable"] = str(not_sealed)
        return view
    view.update(subject=decoded.subject, body={k: _jsonable(v) for k, v in decoded.record.items()})
    return view


def involves(view: dict[str, Any], agent: str | None, task: str | None) -> bool:
    """Whether a decoded view concerns ``agent`` (as sender, recipient, key or subject of the
    body) and ``task``; None matches everything."""
    body = view.get("body", {})
    if agent is not None and agent not in (
        view.get("sender"),
        view.get("recipient"),
        view.get("key"),
        body.get("agent_id"),
        body.get("target"),
    ):
        affected = body.get("affected_agents") or []
        if agent not in affected:
            return False
    return task is None or task in (view.get("task_id"), body.get("task_id"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
