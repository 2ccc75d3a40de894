"""What the sidecar hands an agent: a verified, decoded message, and the body it sends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mesh.domain.envelope import Envelope

__all__ = ["Delivery", "message_body"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified, decoded message handed to the agent."""

    envelope: Envelope
    subject: str
    body: dict[str, Any]
    partition: int
    offset: int

    @property
    def message_id(self) -> str:
        return self.envelope.message_id

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def task_id(self) -> str | None:
        return self.envelope.task_id

    def text(self) -> str:
        """The message's text parts, joined (for ``mesh.a2a.Message`` bodies)."""
        return "\n".join(p["text"] for p in self.body.get("parts", []) if p.get("text"))

    def data(self) -> Any:
        """The first DATA part, parsed (None if there is none)."""
        for part in self.body.get("parts", []):
            if part.get("data_json"):
                return orjson.loads(part["data_json"])
        return None

    def to_json(self) -> dict[str, Any]:
        e = self.envelope
        return {
            "message_id": e.message_id,
            "sender": e.sender,
            "task_id": e.task_id,
            "conversation_id": e.conversation_id,
            "correlation_id": e.correlation_id,
            "causation_id": e.causation_id,
            "hop_count": e.hop_count,
            "created_at_ms": e.created_at_ms,
            "traceparent": e.traceparent,
            "subject": self.subject,
            "body": self.body,
        }


def message_body(
    text: str | None = None, data: Any = None, metadata: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A ``mesh.a2a.Message`` body with a TEXT and/or a DATA part."""
    parts: list[dict[str, Any]] = []
    if text is not None:
        parts.append(_part("TEXT", text=text))
    if data is not None:
        parts.append(_part("DATA", data_json=orjson.dumps(data).decode()))
    return {"role": "AGENT", "parts": parts, "metadata": dict(metadata or {})}


def _part(kind: str, **values: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "text": None,
        "data_json": None,
        "file_uri": None,
        "mime_type": None,
        **values,
    }
