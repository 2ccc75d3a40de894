"""Schema compatibility under Confluent's levels, using the ``avro`` package's checker.

The ``avro`` package is used only here: fastavro does the hot-path encoding, but the reference
implementation's ``ReaderWriterCompatibilityChecker`` is the one that matches the Java rules.

Levels (as Confluent Schema Registry defines them, "new" is the version being added):

* ``BACKWARD``: new can read data written with the previous version.
* ``FORWARD``: the previous version can read data written with new.
* ``FULL``: both. ``*_TRANSITIVE``: against every earlier version, not just the previous one.
* ``NONE``: anything goes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from mesh.errors import InvalidSchemaError

__all__ = ["LEVELS", "check_new_version", "check_versions", "parse_avro"]

LEVELS = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)


def parse_avro(schema: dict[str, Any] | str) -> avro.schema.Schema:
    """Parse with the reference implementation; raise InvalidSchemaError if it is not Avro."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        return avro.schema.parse(text)
    except (avro.errors.AvroException, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise InvalidSchemaError(f"not a valid Avro schema: {exc}") from exc


def check_new_version(
    subject: str,
    new: tuple[int, dict[str, Any] | str],
    earlier: Sequence[tuple[int, dict[str, Any] | str]],
    level: str,
) -> list[str]:
    """Problems adding ``new`` (version, schema) after ``earlier`` under ``level`` (empty: ok)."""
    if level not in LEVELS:
        return [f"{subject}: unknown compatibility level {level!r}; use one of {', '.join(LEVELS)}"]
    if level == "NONE" or not earlier:
        return []
    against = earlier if level.endswith("_TRANSITIVE") else earlier[-1:]
    directions = _directions(level)
    new_version, new_schema = new
    problems = []
    for old_version, old_schema in against:
        for reader_is_new in directions:
            reader, writer = (new_schema, old_schema) if reader_is_new else (old_schema, new_schema)
            problem = _problem(reader, writer)
            if problem:
                who = (
                    f"v{new_version} cannot read data written with v{old_version}"
                    if reader_is_new
                    else f"v{old_version} cannot read data written with v{new_version}"
                )
                problems.append(f"{subject}: {who} ({level}): {problem}")
    return problems


def check_versions(
    subject: str, versions: Sequence[tuple[int, dict[str, Any] | str]], level: str
) -> list[str]:
    """Check each version of a subject against those before it."""
    problems = []
    for i in range(1, len(versions)):
        problems += check_new_version(subject, versions[i], versions[:i], level)
    return problems


def _directions(level: str) -> tuple[bool, ...]:
    if level.startswith("BACKWARD"):
        return (True,)
    if level.startswith("FORWARD"):
        return (False,)
    return (True, False)


def _problem(reader: dict[str, Any] | str, writer: dict[str, Any] | str) -> str | None:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(parse_avro(reader), parse_avro(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return None
    reader_json = reader if isinstance(reader, dict) else json.loads(reader)
    where = ", ".join(sorted(_field_path(reader_json, loc) for loc in result.locations))
    kinds = ", ".join(sorted({i.value for i in result.incompatibilities}))
    detail = "; ".join(sorted(result.messages))
    return f"field {where}: {kinds} ({detail})"


def _field_path(schema: Any, location: str) -> str:
    """Turn the checker's JSON-pointer-like location into field names, e.g. 'recipient.kind'."""
    names = []
    node = schema
    parts = [p for p in location.split("/") if p]
    for i, part in enumerate(parts):
        if part == "fields" and i + 1 < len(parts) and isinstance(node, dict):
            field = node["fields"][int(parts[i + 1])]
            names.append(field["name"])
            node = field["type"]
        elif part == "items" and isinstance(node, dict):
            node = node.get("items")
        elif part == "values" and isinstance(node, dict):
            node = node.get("values")
    return ".".join(names) or "(the record itself)"
