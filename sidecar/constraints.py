"""Constraints from the policy as JSON Schemas (draft 2020-12): a tool's arguments, and the
content of the messages an agent sends (AISVS C9.5.4: semantic constraints on what is passed
downstream, checked by the sending sidecar and again by the receiving one).

Validators are compiled once per schema (keyed by its canonical text) and reused: a permit is
asked for on every tool call. A schema that is not valid JSON Schema is a ConfigError when the
policy is parsed, never a surprise at the first call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from mesh.errors import ConfigError, PolicyViolationError

__all__ = ["PART_KINDS", "check_message_parts", "check_schema", "violation"]

#: The kinds of part an A2A message has (``mesh.a2a.Message``).
PART_KINDS = frozenset({"TEXT", "DATA", "FILE"})


def check_schema(schema: Any, where: str) -> None:
    """ConfigError unless ``schema`` is a valid JSON Schema object."""
    if not isinstance(schema, Mapping):
        raise ConfigError(f"{where} must be a JSON Schema object, not {schema!r}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"{where} is not a valid JSON Schema: {exc.message}") from exc


def violation(schemas: Iterable[Mapping[str, Any]], value: Any) -> str | None:
    """Why ``value`` does not fit every one of ``schemas`` (None: it does): the first error,
    with where."""
    for schema in schemas:
        validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(the arguments)"
            return f"{where}: {error.message}"
    return None


@lru_cache(maxsize=256)
def _validator(text: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(text))


def check_message_parts(
    parts: Any,
    allowed_kinds: frozenset[str] | None,
    data_schemas: tuple[Mapping[str, Any], ...],
    who: str,
) -> None:
    """Refuse a message with a part of a kind the policy does not allow, or a DATA part whose
    JSON is outside any of ``data_schemas`` (``who``: whose policy, for the message)."""
    for index, part in enumerate(parts or ()):
        kind = str(part.get("kind"))
        if allowed_kinds is not None and kind not in allowed_kinds:
            raise PolicyViolationError(
                "message_not_allowed",
                f"part {index} of the message is {kind}, which {who} does not allow "
                f"(message_parts: {', '.join(sorted(allowed_kinds))})",
            )
        if kind != "DATA" or not data_schemas:
            continue
        try:
            data = orjson.loads(part.get("data_json") or "null")
        except orjson.JSONDecodeError:
            data = None
        problem = violation(data_schemas, data)
        if problem is not None:
            raise PolicyViolationError(
                "message_not_allowed",
                f"the DATA of part {index} is outside the message constraints of {who}: {problem}",
            )
