"""Control commands on the wire: sealed as signed envelopes, opened only from a control signer.

Sidecars, the kill-switch and ``mesh halts`` all read the control topic through
:func:`open_control`, so they agree on which records speak for a control signer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.adapters.serde.messages import MessageCodec, OpenedMessage
from mesh.domain.control import CONTROL_SUBJECT
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey
from mesh.errors import EventRejectedError, UnknownSenderError

__all__ = ["check_control", "open_control", "seal_control"]


def seal_control(
    codec: MessageCodec, key: AgentKey, record: Mapping[str, Any], now_ms: int
) -> bytes:
    """A control command as a signed envelope from ``key`` (the mesh's or an operator's)."""
    envelope = Envelope(
        message_id=record["command_id"],
        conversation_id="control",
        correlation_id=record["command_id"],
        sender=key.agent_id,
        recipient_kind=RecipientKind.BROADCAST,
        recipient="",
        created_at_ms=now_ms,
    )
    return codec.seal(envelope, CONTROL_SUBJECT, record, key)


def open_control(codec: MessageCodec, value: bytes, signers: Mapping[str, bytes]) -> OpenedMessage:
    """The control command in ``value``; raise (a MeshError) unless it decodes and one of
    ``signers`` signed it. Sidecars, the kill-switch and ``mesh halts`` all read it this way."""
    return check_control(codec.open(value, verify=False), signers)


def check_control(opened: OpenedMessage, signers: Mapping[str, bytes]) -> OpenedMessage:
    """``opened`` if it is a control command one of ``signers`` signed; raise otherwise."""
    sender = opened.envelope.sender
    if opened.body_subject != CONTROL_SUBJECT:
        raise EventRejectedError(
            f"{CONTROL_SUBJECT} expected on the control topic, not {opened.body_subject}"
        )
    if sender not in signers:
        raise UnknownSenderError(
            f"control command signed by {sender!r}, which is not a control signer; halts and "
            "resumes are obeyed only from the mesh's key, the operator's key and "
            "MESH_CONTROL_SIGNERS"
        )
    opened.verify(signers[sender])
    return opened
