"""The registry's pure core: state folded from log entries, and the decision to register.

No I/O. The Kafka adapter reads entries from ``_mesh_schemas`` and ``apply``-s them; to
register, it asks :meth:`RegistryState.plan` what to write, writes it, then applies it. The
in-memory adapter does the same without a log, which is what unit tests use.

Semantics follow Confluent Schema Registry:

* ids are global; the same schema under another subject gets the same id;
* registering a schema the subject already has returns the existing version;
* a new version must pass the subject's compatibility level (default BACKWARD_TRANSITIVE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mesh.adapters.serde.compat import LEVELS, check_new_version, parse_avro
from mesh.errors import (
    ConfigError,
    IncompatibleSchemaError,
    SchemaNotFoundError,
    SubjectNotFoundError,
    VersionNotFoundError,
)

__all__ = [
    "DEFAULT_LEVEL",
    "Entry",
    "LevelEntry",
    "RegisteredSchema",
    "RegistryState",
    "SchemaEntry",
    "canonical",
    "check_level",
    "entry_from_json",
]

DEFAULT_LEVEL = "BACKWARD_TRANSITIVE"


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    subject: str
    version: int
    schema_id: int
    schema: str


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    """A log entry: ``schema`` registered under ``subject`` as ``version`` with ``schema_id``."""

    subject: str
    version: int
    schema_id: int
    schema: str

    def key(self) -> dict[str, Any]:
        return {"keytype": "SCHEMA", "subject": self.subject, "version": self.version}

    def value(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "version": self.version,
            "id": self.schema_id,
            "schema": self.schema,
        }


@dataclass(frozen=True, slots=True)
class LevelEntry:
    """A log entry: the compatibility level of ``subject`` (None: the global default)."""

    subject: str | None
    level: str

    def key(self) -> dict[str, Any]:
        return {"keytype": "CONFIG", "subject": self.subject}

    def value(self) -> dict[str, Any]:
        return {"compatibilityLevel": self.level}


Entry = SchemaEntry | LevelEntry


@lru_cache(maxsize=4096)
def canonical(schema: str) -> str:
    """Compact, key-sorted JSON: two spellings of one schema compare equal."""
    parse_avro(schema)
    return json.dumps(json.loads(schema), separators=(",", ":"), sort_keys=True)


def entry_from_json(key: dict[str, Any], value: dict[str, Any]) -> Entry | None:
    """Decode a ``_mesh_schemas`` record; None for a key type this version does not know."""
    if key.get("keytype") == "SCHEMA":
        return SchemaEntry(value["subject"], value["version"], value["id"], value["schema"])
    if key.get("keytype") == "CONFIG":
        return LevelEntry(key.get("subject"), value["compatibilityLevel"])
    return None


class RegistryState:
    """Everything registered so far. Mutated only by :meth:`apply`."""

    def __init__(self) -> None:
        self._by_id: dict[int, str] = {}
        self._id_by_schema: dict[str, int] = {}
        self._subjects: dict[str, list[RegisteredSchema]] = {}
        self._levels: dict[str | None, str] = {}

    # -- folding ---------------------------------------------------------------------------

    def apply(self, entry: Entry) -> None:
        if isinstance(entry, LevelEntry):
            self._levels[entry.subject] = entry.level
            return
        self._by_id[entry.schema_id] = entry.schema
        self._id_by_schema.setdefault(canonical(entry.schema), entry.schema_id)
        versions = self._subjects.setdefault(entry.subject, [])
        if all(v.version != entry.version for v in versions):
            versions.append(
                RegisteredSchema(entry.subject, entry.version, entry.schema_id, entry.schema)
            )
            versions.sort(key=lambda v: v.version)

    # -- deciding --------------------------------------------------------------------------

    def plan(self, subject: str, schema: str) -> RegisteredSchema | SchemaEntry:
        """The existing registration of ``schema`` under ``subject``, or the entry to write.

        Raises InvalidSchemaError or IncompatibleSchemaError; writes nothing.
        """
        text = canonical(schema)
        existing = self.find(subject, text)
        if existing is not None:
            return existing
        problems = self.problems(subject, text, "all")
        if problems:
            raise IncompatibleSchemaError(
                "Schema being registered is incompatible with an earlier schema for subject "
                f"{subject!r}: " + "; ".join(problems) + ". Add a default to new fields, or "
                "publish a new major version of the topic."
            )
        schema_id = self._id_by_schema.get(text, max(self._by_id, default=0) + 1)
        version = max((v.version for v in self._subjects.get(subject, [])), default=0) + 1
        return SchemaEntry(subject, version, schema_id, text)

    def problems(self, subject: str, schema: str, against: str | int = "all") -> list[str]:
        """Why ``schema`` may not follow the subject's versions (empty: it may).

        ``against`` is ``"all"`` (what the level requires), ``"latest"`` or a version number.
        """
        versions = self._subjects.get(subject, [])
        if against == "latest":
            versions = versions[-1:]
        elif against != "all":
            versions = [self.version(subject, int(against))]
        earlier = [(v.version, v.schema) for v in versions]
        new_version = (versions[-1].version + 1) if versions else 1
        return check_new_version(subject, (new_version, schema), earlier, self.level(subject))

    # -- reading ---------------------------------------------------------------------------

    def find(self, subject: str, schema: str) -> RegisteredSchema | None:
        text = canonical(schema)
        for registered in self._subjects.get(subject, []):
            if canonical(registered.schema) == text:
                return registered
        return None

    def schema(self, schema_id: int) -> str:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise SchemaNotFoundError(f"schema id {schema_id} is not registered") from None

    def has_id(self, schema_id: int) -> bool:
        return schema_id in self._by_id

    def subjects(self) -> list[str]:
        return sorted(self._subjects)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        versions = self._subjects.get(subject)
        if not versions:
            raise SubjectNotFoundError(f"subject {subject!r} not found")
        return list(versions)

    def version(self, subject: str, version: int | str) -> RegisteredSchema:
        versions = self.versions(subject)
        if version in ("latest", -1):
            return versions[-1]
        for registered in versions:
            if registered.version == int(version):
                return registered
        raise VersionNotFoundError(f"version {version} of subject {subject!r} not found")

    def subjects_of(self, schema_id: int) -> list[RegisteredSchema]:
        self.schema(schema_id)
        return [v for vs in self._subjects.values() for v in vs if v.schema_id == schema_id]

    def level(self, subject: str | None = None) -> str:
        if subject is not None and subject in self._levels:
            return self._levels[subject]
        return self._levels.get(None, DEFAULT_LEVEL)

    def explicit_level(self, subject: str) -> str | None:
        return self._levels.get(subject)


def check_level(level: str) -> str:
    """Normalise a compatibility level name or raise ConfigError."""
    upper = level.upper()
    if upper not in LEVELS:
        raise ConfigError(f"unknown compatibility level {level!r}; use one of {', '.join(LEVELS)}")
    return upper
