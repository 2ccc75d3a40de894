"""Avro bodies with fastavro: schemaless encode, and decode with writer/reader resolution."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import fastavro
from fastavro.types import Schema as ParsedSchema
from fastavro.validation import ValidationError, validate

from mesh.adapters.serde.strict import unknown_keys
from mesh.errors import RecordEncodeError, TruncatedBodyError

__all__ = ["ParsedSchema", "decode_body", "encode_body", "parse", "validate_body"]


_TIME_TYPES = frozenset(
    {
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "time-millis",
        "time-micros",
        "date",
    }
)


def parse(schema: Mapping[str, Any]) -> ParsedSchema:
    """Parse once; keep the result (parsing costs far more than encoding one record).

    Time logical types are read as their plain int/long: the mesh works in epoch
    milliseconds throughout, and building a datetime per field costs more than the rest of the
    decode. The bytes on the wire are the same either way.
    """
    return fastavro.parse_schema(_plain_times(dict(schema)))


def _plain_times(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _plain_times(v)
            for k, v in node.items()
            if not (k == "logicalType" and v in _TIME_TYPES)
        }
    if isinstance(node, list):
        return [_plain_times(v) for v in node]
    return node


def validate_body(schema: ParsedSchema, record: Mapping[str, Any]) -> None:
    """Raise RecordEncodeError naming every field of ``record`` that ``schema`` refuses.

    fastavro's writer is lenient (a missing boolean is written as false, a missing long as
    0); what an agent hands the sidecar is checked strictly before it is signed.

    The check runs first without collecting errors: with ``raise_errors=True`` fastavro builds
    (and JSON-formats) an error for every union branch a valid value does not take, which made
    validation 4x slower than the encode itself. Only a record that fails is checked again to
    say why.
    """
    name = schema.get("name", "record") if isinstance(schema, dict) else "record"
    fields = schema.get("fields", []) if isinstance(schema, dict) else []
    missing = [f["name"] for f in fields if "default" not in f and f["name"] not in record]
    unknown = sorted(set(record) - {f["name"] for f in fields}) if fields else []
    if missing or unknown:
        raise RecordEncodeError(
            f"record does not match schema {name}: "
            + "; ".join(
                ([f"missing field(s) {', '.join(missing)}"] if missing else [])
                + ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
            )
        )
    nested = unknown_keys(schema, record)
    if nested:
        raise RecordEncodeError(
            f"record does not match schema {name}: unknown field(s) {', '.join(nested)}"
        )
    if validate(record, schema, raise_errors=False):
        return
    try:
        validate(record, schema, raise_errors=True)
    except ValidationError as exc:
        problems = "; ".join(str(e) for e in exc.errors) or str(exc)
        raise RecordEncodeError(f"record does not match schema {name}: {problems}") from exc
    raise RecordEncodeError(f"record does not match schema {name}")


def encode_body(schema: ParsedSchema, record: Mapping[str, Any]) -> bytes:
    """Encode one record without a header; raise RecordEncodeError if it does not fit."""
    buffer = io.BytesIO()
    try:
        fastavro.schemaless_writer(buffer, schema, record)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        name = schema.get("name", "record") if isinstance(schema, dict) else "record"
        raise RecordEncodeError(f"record does not match schema {name}: {exc}") from exc
    return buffer.getvalue()


def decode_body(
    body: bytes | memoryview, writer: ParsedSchema, reader: ParsedSchema | None = None
) -> dict[str, Any]:
    """Decode one body written with ``writer``, resolved to ``reader`` if given.

    A body that ends early, or that has bytes left over, raises TruncatedBodyError: both mean
    the bytes were cut or glued, and silently accepting them could hide corruption.
    """
    buffer = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buffer, writer, reader)
    except (EOFError, IndexError, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise TruncatedBodyError(
            f"Avro body of {len(body)} bytes does not decode with the writer schema "
            f"({type(exc).__name__}: {exc}); the record is truncated or corrupt"
        ) from exc
    left = len(body) - buffer.tell()
    if left:
        raise TruncatedBodyError(
            f"{left} bytes left over after decoding a {len(body)}-byte Avro body; "
            "the record is corrupt or was written with a different schema than its id says"
        )
    if not isinstance(record, dict):
        raise TruncatedBodyError("Avro body did not decode to a record")
    return record
