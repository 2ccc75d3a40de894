"""The envelope every mesh message travels in. Pure domain: no client, no I/O.

Field meanings are documented in ``schemas/mesh.Envelope/v1.avsc``. The body is carried as
Confluent-framed bytes of its own schema, so a consumer can route, verify and audit a message
without knowing its body's schema.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = ["SIGNATURE_SCHEME", "Envelope", "RecipientKind", "new_envelope"]

SIGNATURE_SCHEME = "ed25519"


class RecipientKind(StrEnum):
    AGENT = "AGENT"
    CAPABILITY = "CAPABILITY"
    BROADCAST = "BROADCAST"


class Envelope(NamedTuple):
    """Routing, causality and trace facts of one message (everything but body and signature).

    A NamedTuple rather than a frozen dataclass: one is built per message decoded, and a
    frozen dataclass's ``__init__`` costs several times more (it sets each field through
    ``object.__setattr__``).
    """

    message_id: str
    conversation_id: str
    correlation_id: str
    sender: str
    recipient_kind: RecipientKind
    recipient: str
    created_at_ms: int
    hop_count: int = 0
    task_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None

    def to_record(self, body: bytes, signature: bytes = b"") -> dict[str, Any]:
        """The Avro record of this envelope around ``body``."""
        return {
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "task_id": self.task_id,
            "causation_id": self.causation_id,
            "correlation_id": self.correlation_id,
            "sender": self.sender,
            "recipient": {"kind": self.recipient_kind.value, "value": self.recipient},
            "created_at": self.created_at_ms,
            "hop_count": self.hop_count,
            "traceparent": self.traceparent,
            "body": body,
            "signature_scheme": SIGNATURE_SCHEME,
            "signature": signature,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Envelope:
        recipient = record["recipient"]
        return cls(
            record["message_id"],
            record["conversation_id"],
            record["correlation_id"],
            record["sender"],
            _KINDS[recipient["kind"]],
            recipient["value"],
            record["created_at"],  # epoch ms: mesh.adapters.serde reads time types as plain longs
            record["hop_count"],
            record["task_id"],
            record["causation_id"],
            record["traceparent"],
        )

    def reply(self, sender: str, recipient: str, **changes: Any) -> Envelope:
        """A message caused by this one: same conversation, task and correlation, one hop on."""
        fields: dict[str, Any] = {
            "message_id": str(uuid.uuid4()),
            "conversation_id": self.conversation_id,
            "correlation_id": self.correlation_id,
            "sender": sender,
            "recipient_kind": RecipientKind.AGENT,
            "recipient": recipient,
            "created_at_ms": _now_ms(),
            "hop_count": self.hop_count + 1,
            "task_id": self.task_id,
            "causation_id": self.message_id,
            "traceparent": self.traceparent,
        }
        fields.update(changes)
        return Envelope(**fields)


def new_envelope(
    sender: str,
    recipient: str,
    *,
    recipient_kind: RecipientKind = RecipientKind.AGENT,
    task_id: str | None = None,
    conversation_id: str | None = None,
    traceparent: str | None = None,
) -> Envelope:
    """A root message: fresh ids, no causation, hop count 0."""
    message_id = str(uuid.uuid4())
    return Envelope(
        message_id=message_id,
        conversation_id=conversation_id or task_id or message_id,
        correlation_id=message_id,
        sender=sender,
        recipient_kind=recipient_kind,
        recipient=recipient,
        created_at_ms=_now_ms(),
        task_id=task_id,
        traceparent=traceparent,
    )


_KINDS = {kind.value: kind for kind in RecipientKind}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
