"""An in-memory registry over the pure core, for unit tests and single-process tools."""

from __future__ import annotations

import threading

from mesh.adapters.schemaregistry.core import (
    LevelEntry,
    RegisteredSchema,
    RegistryState,
    check_level,
)
from mesh.errors import SchemaNotFoundError

__all__ = ["InMemoryRegistry", "lookup"]


class InMemoryRegistry:
    """A SchemaRegistry whose log is a Python list."""

    def __init__(self) -> None:
        self.state = RegistryState()
        self._lock = threading.Lock()

    def register(self, subject: str, schema: str) -> RegisteredSchema:
        with self._lock:
            planned = self.state.plan(subject, schema)
            if isinstance(planned, RegisteredSchema):
                return planned
            self.state.apply(planned)
            return self.state.version(subject, planned.version)

    def schema_by_id(self, schema_id: int) -> str:
        return self.state.schema(schema_id)

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        return lookup(self.state, subject, schema)

    def subjects(self) -> list[str]:
        return self.state.subjects()

    def versions(self, subject: str) -> list[int]:
        return [v.version for v in self.state.versions(subject)]

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        return self.state.version(subject, version)

    def get_level(self, subject: str | None = None) -> str:
        return self.state.level(subject)

    def set_level(self, level: str, subject: str | None = None) -> str:
        entry = LevelEntry(subject, check_level(level))
        with self._lock:
            self.state.apply(entry)
        return entry.level

    def compatibility_problems(
        self, subject: str, schema: str, against: str | int = "all"
    ) -> list[str]:
        return self.state.problems(subject, schema, against)

    def close(self) -> None:
        return None


def lookup(state: RegistryState, subject: str, schema: str) -> RegisteredSchema:
    """Shared by the adapters: find a registration or raise the Confluent-style error."""
    state.versions(subject)  # raises SubjectNotFoundError for an unknown subject
    found = state.find(subject, schema)
    if found is None:
        raise SchemaNotFoundError(f"schema not found under subject {subject!r}")
    return found
