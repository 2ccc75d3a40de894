"""Telemetry the sidecar reports about its agent: the record body and its envelope. Pure.

Kinds are the schema's ``TelemetryKind`` enum (:class:`mesh.domain.telemetry.Kind`); a report
about a message carries the message's causality (correlation, conversation, hop count, cause),
so the kill-switch's loop rules can follow a chain.
"""

from __future__ import annotations

from typing import Any

from mesh.domain.envelope import Envelope, RecipientKind, new_envelope
from mesh.domain.telemetry import TELEMETRY_SUBJECT, Kind

__all__ = ["TELEMETRY_SUBJECT", "Kind", "telemetry_body", "telemetry_envelope"]


def telemetry_body(agent_id: str, kind: Kind, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "kind": kind.value,
        "name": name,
        "peer": None,
        "arguments_digest": None,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "latency_ms": 0.0,
        "ok": True,
        "detail": None,
        "instance_id": None,
        "permit_id": None,
        "policy_hash": None,
        "rule": None,
        **fields,
    }


def telemetry_envelope(agent_id: str, about: Envelope | None = None) -> Envelope:
    envelope = new_envelope(agent_id, "", recipient_kind=RecipientKind.BROADCAST)
    if about is None:
        return envelope
    return envelope._replace(
        correlation_id=about.correlation_id,
        conversation_id=about.conversation_id,
        hop_count=about.hop_count,
        task_id=about.task_id,
        causation_id=about.message_id,
    )
