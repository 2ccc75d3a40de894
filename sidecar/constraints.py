"""Tool argument constraints: a JSON Schema (draft 2020-12) per tool in the policy.

Validators are compiled once per schema (keyed by its canonical text) and reused: a permit is
asked for on every tool call. A schema that is not valid JSON Schema is a ConfigError when the
policy is parsed, never a surprise at the first call.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from mesh.errors import ConfigError

__all__ = ["check_schema", "violation"]


def check_schema(schema: Any, where: str) -> None:
    """ConfigError unless ``schema`` is a valid JSON Schema object."""
    if not isinstance(schema, Mapping):
        raise ConfigError(f"{where} must be a JSON Schema object, not {schema!r}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"{where} is not a valid JSON Schema: {exc.message}") from exc


def violation(schema: Mapping[str, Any], arguments: Any) -> str | None:
    """Why ``arguments`` do not fit ``schema`` (None: they do): the first error, with where."""
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    error = next(iter(validator.iter_errors(arguments)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(the arguments)"
    return f"{where}: {error.message}"


@lru_cache(maxsize=256)
def _validator(text: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(text))
