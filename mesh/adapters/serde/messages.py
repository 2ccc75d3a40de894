"""Signed messages: an envelope around a body, sealed by the sender and opened by receivers.

The signature covers every byte of the framed envelope up to the ``signature`` field, which is
the envelope's last field (``mesh schemas check`` enforces it). Because Avro writes a ``bytes``
field as a zig-zag length then the bytes, the signed prefix is exactly the message minus its
last ``len(varint) + len(signature)`` bytes: sealing encodes once, and opening verifies without
re-encoding anything.

What is signed includes the wire header (so the schema id is bound) and the body's framed bytes
(so the body's schema id and content are bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.contracts import ENVELOPE_SUBJECT
from mesh.domain.envelope import SIGNATURE_SCHEME, Envelope
from mesh.domain.identity import AgentKey, KeyResolver, verify_signature
from mesh.errors import BadSignatureError, OversizeMessageError

__all__ = ["MessageCodec", "OpenedMessage"]


class OpenedMessage(NamedTuple):
    """A decoded message, the bytes it arrived as, and its signature (verified by ``open``
    unless asked not to; ``verify`` checks it against a given key)."""

    envelope: Envelope
    body_subject: str
    body: dict[str, Any]
    raw: bytes
    signature_scheme: str = SIGNATURE_SCHEME
    signature: bytes = b""

    def verify(self, public_key: bytes) -> None:
        """Raise BadSignatureError unless the sender's raw 32-byte ``public_key`` signed it."""
        sender = self.envelope.sender
        if self.signature_scheme != SIGNATURE_SCHEME:
            raise BadSignatureError(
                f"signature scheme {self.signature_scheme!r} from {sender!r} is not "
                f"supported; this mesh verifies {SIGNATURE_SCHEME!r}"
            )
        tail = len(self.signature) + len(_zigzag_varint(len(self.signature)))
        verify_signature(public_key, self.signature, self.raw[: len(self.raw) - tail], sender)


class MessageCodec:
    """Seal (encode + sign) and open (verify + decode) mesh messages."""

    def __init__(self, serde: Serde, keys: KeyResolver, max_bytes: int = 1_048_576) -> None:
        self.serde = serde
        self.keys = keys
        self.max_bytes = max_bytes

    def seal(
        self,
        envelope: Envelope,
        body_subject: str,
        body: Mapping[str, Any],
        key: AgentKey | None,
    ) -> bytes:
        """The wire bytes of a message; unsigned (empty signature) only when ``key`` is None."""
        return self.seal_framed(envelope, self.serde.encode(body_subject, body), key)

    def seal_framed(self, envelope: Envelope, framed_body: bytes, key: AgentKey | None) -> bytes:
        """:meth:`seal` for a body already framed (its schema id first)."""
        unsigned = self.serde.encode(ENVELOPE_SUBJECT, envelope.to_record(framed_body))
        self._refuse_oversize(len(unsigned) + 65, "sending")
        if key is None:
            return unsigned
        # An empty ``bytes`` field is the single byte 0 (its length); the signed prefix is
        # everything before it.
        prefix = unsigned[:-1]
        signature = key.sign(prefix)
        return prefix + _zigzag_varint(len(signature)) + signature

    def open(self, data: bytes, *, verify: bool = True) -> OpenedMessage:
        """Decode and (unless ``verify`` is False) verify; raise a SerdeError or IdentityError."""
        self._refuse_oversize(len(data), "received")
        decoded = self.serde.decode(data)
        record = decoded.record
        if decoded.subject != ENVELOPE_SUBJECT:
            raise BadSignatureError(
                f"expected a {ENVELOPE_SUBJECT} but got {decoded.subject}: the record was not "
                "sent through a mesh sidecar"
            )
        body = self.serde.decode(record["body"])
        opened = OpenedMessage(
            Envelope.from_record(record),
            body.subject,
            body.record,
            data,
            record["signature_scheme"],
            record["signature"],
        )
        if verify:
            opened.verify(self.keys.public_key(opened.envelope.sender))
        return opened

    def _refuse_oversize(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise OversizeMessageError(
                f"message {what} is {size} bytes, over the limit of {self.max_bytes} "
                "(MESH_MAX_MESSAGE_BYTES); send large content as a file part with a URI instead"
            )


def _zigzag_varint(value: int) -> bytes:
    """Avro's encoding of a non-negative long (the length prefix of a bytes field)."""
    encoded = value << 1
    out = bytearray()
    while encoded > 0x7F:
        out.append((encoded & 0x7F) | 0x80)
        encoded >>= 7
    out.append(encoded)
    return bytes(out)
