"""Dead letters: what the mesh refused, with the reason and the original bytes. Pure.

Whoever refuses a record builds one of these and produces it to ``mesh.dlq.v1`` keyed by the
source key, so nothing is dropped silently and the bytes can be inspected or replayed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mesh.errors import MeshError

__all__ = ["DEAD_LETTER_SUBJECT", "SourceCoordinates", "dead_letter", "dead_letter_value"]

DEAD_LETTER_SUBJECT = "mesh.dlq.DeadLetter"


@dataclass(frozen=True, slots=True)
class SourceCoordinates:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


def dead_letter(
    error: MeshError,
    original: bytes,
    detected_by: str,
    source: SourceCoordinates | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """The DeadLetter record for ``original``, refused with ``error``."""
    return {
        "reason_code": error.code,
        "reason": str(error),
        "source_topic": source.topic if source else None,
        "source_partition": source.partition if source else None,
        "source_offset": source.offset if source else None,
        "source_key": source.key if source else None,
        "original": bytes(original),
        "detected_by": detected_by,
        "detected_at": now_ms if now_ms is not None else time.time_ns() // 1_000_000,
    }


class _Encoder(Protocol):
    def encode(self, subject: str, record: Mapping[str, Any]) -> bytes: ...


def dead_letter_value(
    encoder: _Encoder,
    error: MeshError,
    original: bytes,
    detected_by: str,
    source: SourceCoordinates,
    now_ms: int | None = None,
) -> bytes:
    """The framed DeadLetter record, to produce to ``mesh.dlq.v1`` keyed by ``source.key``."""
    letter = dead_letter(error, original, detected_by, source, now_ms)
    return encoder.encode(DEAD_LETTER_SUBJECT, letter)
