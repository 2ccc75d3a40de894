"""Strict at every edge: no field the mesh's schemas do not name passes, at any depth.

Avro resolution drops a writer's field the reader does not have, and fastavro's writer
ignores a key the schema does not name, both silently: an agent could smuggle data past
validation in a nested record, or a writer schema registered outside the catalogue could carry
fields no reader checks. Two checks close both paths:

* :func:`unknown_keys`: the keys of a record (and of every nested record, in arrays, maps and
  unions) that its schema does not name, for what an agent hands its sidecar;
* :func:`field_paths`: every field path a schema defines, so a writer schema can be compared
  with the catalogue's reader (a path only the writer has is an unknown field).

Schemas are walked as JSON (named types are defined once and referred to by name after).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["field_paths", "unknown_keys"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def field_paths(schema: Any) -> set[str]:
    """Every field path ``schema`` defines (``parts[].text``, ``metadata{}``...)."""
    paths: set[str] = set()
    _paths(schema, "", paths, {}, set())
    return paths


def unknown_keys(schema: Any, record: Any) -> list[str]:
    """The paths of keys in ``record`` that ``schema`` does not name (empty: none)."""
    found: list[str] = []
    _unknown(schema, record, "", found, {})
    return found


def _named(schema: Any, names: dict[str, Any], namespace: str = "") -> Any:
    """``schema`` with a name reference replaced by its definition (recording definitions)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        return names.get(schema) or names.get(f"{namespace}.{schema}") or schema
    if isinstance(schema, Mapping) and schema.get("type") in ("record", "enum", "fixed"):
        name = str(schema.get("name", ""))
        space = str(schema.get("namespace", namespace))
        full = name if "." in name or not space else f"{space}.{name}"
        names.setdefault(full, schema)
        names.setdefault(name, schema)
    return schema


def _paths(schema: Any, at: str, out: set[str], names: dict[str, Any], seen: set[str]) -> None:
    schema = _named(schema, names)
    if isinstance(schema, list):
        for branch in schema:
            _paths(branch, at, out, names, seen)
        return
    if not isinstance(schema, Mapping):
        return
    kind = schema.get("type")
    if kind == "record":
        name = str(schema.get("name", ""))
        if f"{at}:{name}" in seen:  # a recursive type: its fields are already listed
            return
        seen.add(f"{at}:{name}")
        for field in schema.get("fields", []):
            path = f"{at}.{field['name']}" if at else str(field["name"])
            out.add(path)
            _paths(field["type"], path, out, names, seen)
    elif kind == "array":
        _paths(schema.get("items"), f"{at}[]", out, names, seen)
    elif kind == "map":
        _paths(schema.get("values"), f"{at}{{}}", out, names, seen)
    elif isinstance(kind, list | dict):
        _paths(kind, at, out, names, seen)


def _unknown(schema: Any, value: Any, at: str, out: list[str], names: dict[str, Any]) -> None:
    schema = _named(schema, names)
    if isinstance(schema, list):
        _unknown_in_union(schema, value, at, out, names)
        return
    if not isinstance(schema, Mapping):
        return
    kind = schema.get("type")
    if kind == "record" and isinstance(value, Mapping):
        fields = {str(f["name"]): f for f in schema.get("fields", [])}
        for key, item in value.items():
            path = f"{at}.{key}" if at else str(key)
            if key not in fields:
                out.append(path)
            else:
                _unknown(fields[key]["type"], item, path, out, names)
    elif kind == "array" and isinstance(value, list):
        for n, item in enumerate(value):
            _unknown(schema.get("items"), item, f"{at}[{n}]", out, names)
    elif kind == "map" and isinstance(value, Mapping):
        for key, item in value.items():
            _unknown(schema.get("values"), item, f"{at}[{key!r}]", out, names)
    elif isinstance(kind, list | dict):
        _unknown(kind, value, at, out, names)


def _unknown_in_union(
    branches: list[Any], value: Any, at: str, out: list[str], names: dict[str, Any]
) -> None:
    """A value of a union is judged by the branch it fits best (fewest unknown keys)."""
    if value is None or not isinstance(value, Mapping | list):
        for branch in branches:  # still register named types defined inside the union
            _named(branch, names)
        return
    best: list[str] | None = None
    for branch in branches:
        found: list[str] = []
        resolved = _named(branch, names)
        kind = resolved.get("type") if isinstance(resolved, Mapping) else resolved
        if isinstance(value, list) != (kind == "array"):
            continue
        _unknown(resolved, value, at, found, names)
        if best is None or len(found) < len(best):
            best = found
    out.extend(best or [])
