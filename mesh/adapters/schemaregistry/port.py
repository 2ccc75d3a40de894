"""The schema registry port: what the mesh needs from any registry.

Three implementations honour it, and one contract suite (tests/contract) runs against each:
:class:`~.memory.InMemoryRegistry` (tests), :class:`~.kafka.KafkaRegistry` (the embedded
registry on ``_mesh_schemas``) and :class:`~.http_client.HttpRegistry` (any
Confluent-compatible registry over REST, e.g. ours served by ``mesh registry serve``).
"""

from __future__ import annotations

from typing import Protocol

from mesh.adapters.schemaregistry.core import RegisteredSchema

__all__ = ["SchemaRegistry"]


class SchemaRegistry(Protocol):
    def register(self, subject: str, schema: str) -> RegisteredSchema:
        """Register (or find) ``schema`` under ``subject``; raise IncompatibleSchemaError."""
        ...

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text of an id; raise SchemaNotFoundError."""
        ...

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        """The registration of ``schema`` under ``subject``; raise SchemaNotFoundError."""
        ...

    def subjects(self) -> list[str]: ...

    def versions(self, subject: str) -> list[int]: ...

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema: ...

    def get_level(self, subject: str | None = None) -> str: ...

    def set_level(self, level: str, subject: str | None = None) -> str: ...

    def compatibility_problems(
        self, subject: str, schema: str, against: str | int = "all"
    ) -> list[str]:
        """Why ``schema`` could not be registered (empty: it could)."""
        ...

    def close(self) -> None: ...
