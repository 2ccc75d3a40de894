"""The records the runtime moves: one consumed, one to produce."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OutRecord", "SourceRecord"]


class SourceRecord(NamedTuple):
    topic: str  # the full (prefixed) name
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class OutRecord(NamedTuple):
    topic: str  # the full (prefixed) name
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: by key (murmur2)
    headers: tuple[tuple[str, bytes], ...] = ()
