"""The hash chain of one audit partition: canonical bytes, links and checkpoints (pure).

Specified byte for byte in ``docs/audit-format.md`` so an auditor can verify the log with
nothing but a SHA-256 and an Ed25519 library. Integers are big-endian; strings are UTF-8 with a
length prefix, so no two different links share canonical bytes.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, NamedTuple

from mesh.domain.identity import verify_signature
from mesh.errors import BadSignatureError

__all__ = [
    "AUDIT_SUBJECT",
    "CHECKPOINT_DOMAIN",
    "CHECKPOINT_SUBJECT",
    "GENESIS",
    "LINK_DOMAIN",
    "SIGNATURE_DOMAIN",
    "Checkpoint",
    "Link",
    "checkpoint_bytes",
    "link_bytes",
    "next_link",
    "signature_bytes",
    "signature_problem",
]

AUDIT_SUBJECT = "mesh.audit.AuditRecord"
CHECKPOINT_SUBJECT = "mesh.audit.Checkpoint"
LINK_DOMAIN = b"mesh.audit.v1\x00"
CHECKPOINT_DOMAIN = b"mesh.audit.checkpoint.v1\x00"
SIGNATURE_DOMAIN = b"mesh.audit.link.v1\x00"
#: The prev_hash of the first link of every partition.
GENESIS = bytes(32)


class Link(NamedTuple):
    """One audit record (the fields of ``mesh.audit.AuditRecord`` plus where it lives)."""

    audit_partition: int
    sequence: int
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int
    source_key: bytes | None
    value_sha256: bytes
    original: bytes | None
    prev_hash: bytes
    record_hash: bytes
    #: The mesh key's signature over :func:`signature_bytes`: who wrote the link. Empty in links
    #: written before ``AuditRecord`` v2; those are proven only by a checkpoint after them.
    signature: bytes = b""

    def to_record(self) -> dict[str, Any]:
        record = self._asdict()
        del record["audit_partition"]
        record["source_timestamp"] = record.pop("source_timestamp_ms")
        return record

    @classmethod
    def from_record(cls, audit_partition: int, record: dict[str, Any]) -> Link:
        return cls(
            audit_partition,
            record["sequence"],
            record["source_topic"],
            record["source_partition"],
            record["source_offset"],
            record["source_timestamp"],
            record["source_key"],
            record["value_sha256"],
            record["original"],
            record["prev_hash"],
            record["record_hash"],
            record.get("signature") or b"",
        )

    def expected_hash(self) -> bytes:
        return hashlib.sha256(link_bytes(self)).digest()


class Checkpoint(NamedTuple):
    audit_partition: int
    sequence: int
    head_hash: bytes
    at_ms: int
    signature: bytes

    def to_record(self) -> dict[str, Any]:
        return {
            "audit_partition": self.audit_partition,
            "sequence": self.sequence,
            "head_hash": self.head_hash,
            "at": self.at_ms,
            "signature": self.signature,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Checkpoint:
        return cls(
            record["audit_partition"],
            record["sequence"],
            record["head_hash"],
            record["at"],
            record["signature"],
        )


def link_bytes(link: Link) -> bytes:
    """The canonical form a link's ``record_hash`` is the SHA-256 of."""
    topic = link.source_topic.encode()
    key = link.source_key
    return b"".join(
        (
            LINK_DOMAIN,
            struct.pack(">IQ", link.audit_partition, link.sequence),
            link.prev_hash,
            struct.pack(">H", len(topic)),
            topic,
            struct.pack(
                ">IQq", link.source_partition, link.source_offset, link.source_timestamp_ms
            ),
            b"\x00" if key is None else b"\x01" + struct.pack(">I", len(key)) + key,
            link.value_sha256,
        )
    )


#: The largest original kept in a link (the audit topic takes 1 MiB records by default).
KEEP_ORIGINAL_BYTES = 512 * 1024


def next_link(
    head: Link | None,
    audit_partition: int,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    keep_original_up_to: int = KEEP_ORIGINAL_BYTES,
) -> Link:
    """The link that records one source record after ``head`` (None: the partition's first).
    The original bytes are kept for replay up to ``keep_original_up_to``; a larger record (a
    dead letter of an oversize message can hold 8 MiB) is recorded by its SHA-256 alone, so
    the link always fits the audit topic and the source check still proves the bytes."""
    original = value if value is not None else b""
    kept = original if len(original) <= keep_original_up_to else None
    unsealed = Link(
        audit_partition,
        0 if head is None else head.sequence + 1,
        topic,
        partition,
        offset,
        timestamp_ms,
        key,
        hashlib.sha256(original).digest(),
        kept,
        GENESIS if head is None else head.record_hash,
        b"",
    )
    return unsealed._replace(record_hash=unsealed.expected_hash())


def signature_bytes(link: Link) -> bytes:
    """What a link's signature covers: its ``record_hash``, which covers all of it."""
    return SIGNATURE_DOMAIN + link.record_hash


def signature_problem(link: Link, public_key: bytes) -> str | None:
    """Why ``link`` is not proven to be the audit processor's (None: its signature holds)."""
    if not link.signature:
        return "unsigned"
    try:
        verify_signature(public_key, link.signature, signature_bytes(link), "the mesh")
    except BadSignatureError:
        return "its signature does not verify with the mesh's key"
    return None


def checkpoint_bytes(audit_partition: int, sequence: int, head_hash: bytes, at_ms: int) -> bytes:
    """What a checkpoint's Ed25519 signature covers."""
    return (
        CHECKPOINT_DOMAIN
        + struct.pack(">IQ", audit_partition, sequence)
        + head_hash
        + (struct.pack(">q", at_ms))
    )
