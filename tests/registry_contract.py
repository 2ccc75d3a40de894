"""One contract suite for every SchemaRegistry implementation (the port's behaviour).

Subclasses provide a ``registry`` fixture; each test uses fresh subject names so one backing
store can serve the whole suite.
"""

from __future__ import annotations

import json
import uuid

import pytest

from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.errors import (
    IncompatibleSchemaError,
    InvalidSchemaError,
    SchemaNotFoundError,
    SubjectNotFoundError,
    VersionNotFoundError,
)


def schema(*extra: dict, name: str = "Thing") -> str:
    fields = [{"name": "a", "type": "string"}, *extra]
    return json.dumps({"type": "record", "name": name, "namespace": "c", "fields": fields})


V1 = schema()
V2 = schema({"name": "b", "type": "int", "default": 0})
BREAKING = schema({"name": "b", "type": "int"})


class RegistryContract:
    @pytest.fixture
    def subject(self) -> str:
        return f"c.Thing-{uuid.uuid4().hex[:8]}"

    def test_register_is_idempotent(self, registry: SchemaRegistry, subject: str) -> None:
        first = registry.register(subject, V1)
        again = registry.register(subject, json.dumps(json.loads(V1), indent=2))
        assert (
            (again.schema_id, again.version)
            == (first.schema_id, first.version)
            == (first.schema_id, 1)
        )
        assert json.loads(registry.schema_by_id(first.schema_id)) == json.loads(V1)

    def test_versions_count_up_and_ids_differ(self, registry: SchemaRegistry, subject: str) -> None:
        one = registry.register(subject, V1)
        two = registry.register(subject, V2)
        assert (one.version, two.version) == (1, 2)
        assert one.schema_id != two.schema_id
        assert registry.versions(subject) == [1, 2]
        assert registry.get_version(subject, "latest").schema_id == two.schema_id
        assert registry.get_version(subject, 1).schema_id == one.schema_id
        assert subject in registry.subjects()

    def test_same_schema_under_two_subjects_shares_an_id(
        self, registry: SchemaRegistry, subject: str
    ) -> None:
        other = f"{subject}-other"
        assert registry.register(subject, V1).schema_id == registry.register(other, V1).schema_id

    def test_incompatible_version_is_refused_with_the_field(
        self, registry: SchemaRegistry, subject: str
    ) -> None:
        registry.register(subject, V1)
        assert registry.compatibility_problems(subject, V2) == []
        assert registry.compatibility_problems(subject, BREAKING) != []
        with pytest.raises(IncompatibleSchemaError, match="b"):
            registry.register(subject, BREAKING)
        assert registry.versions(subject) == [1]

    def test_level_per_subject(self, registry: SchemaRegistry, subject: str) -> None:
        registry.register(subject, V1)
        assert registry.get_level(subject) == "BACKWARD_TRANSITIVE"
        assert registry.set_level("NONE", subject) == "NONE"
        assert registry.get_level(subject) == "NONE"
        assert registry.register(subject, BREAKING).version == 2

    def test_lookup(self, registry: SchemaRegistry, subject: str) -> None:
        registered = registry.register(subject, V1)
        assert registry.lookup(subject, V1) == registered
        with pytest.raises(SchemaNotFoundError):
            registry.lookup(subject, V2)

    def test_missing_things_raise_their_own_errors(
        self, registry: SchemaRegistry, subject: str
    ) -> None:
        with pytest.raises(SubjectNotFoundError):
            registry.versions(subject)
        registry.register(subject, V1)
        with pytest.raises(VersionNotFoundError):
            registry.get_version(subject, 9)
        with pytest.raises(SchemaNotFoundError):
            registry.schema_by_id(987_654)

    def test_not_avro_is_refused(self, registry: SchemaRegistry, subject: str) -> None:
        with pytest.raises(InvalidSchemaError):
            registry.register(subject, '{"type": "record", "name": "NoFields"}')
