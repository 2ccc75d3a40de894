"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body.

Every Kafka tool and Schema Registry client speaks it, so mesh topics stay readable by them.
"""

from __future__ import annotations

import struct

from mesh.errors import MalformedMessageError, WrongMagicByteError

__all__ = ["HEADER_SIZE", "MAGIC", "frame", "unframe"]

MAGIC = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">bI")


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the wire-format header."""
    return _HEADER.pack(MAGIC, schema_id) + body


def unframe(data: bytes) -> tuple[int, memoryview]:
    """Split framed bytes into (schema id, body); raise if they are not wire format."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessageError(
            f"expected bytes in Confluent wire format, got {type(data).__name__}; "
            "the producer did not serialize with a schema registry serializer"
        )
    if len(data) < HEADER_SIZE:
        raise MalformedMessageError(
            f"{len(data)} bytes is shorter than the 5-byte wire-format header; "
            "the record was not written by a schema-registry serializer"
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WrongMagicByteError(
            f"magic byte is {magic}, expected 0: not Confluent wire format "
            "(was it produced as plain JSON or text?)"
        )
    return schema_id, memoryview(data)[HEADER_SIZE:]
