"""Records of registered subjects to and from Confluent wire format, across schema versions.

Writer/reader resolution: a record is always decoded with the schema its id names (the
writer's) and resolved to the reader schema this process was built with, the newest version
of that subject in ``schemas/``. So a v2 reader gets v1 data with v2's defaults filled in, and
a process still on v1 reads v2 data without the fields it does not know.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mesh.adapters.schemaregistry.core import canonical
from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.adapters.serde.avro import ParsedSchema, decode_body, encode_body, parse, validate_body
from mesh.adapters.serde.contracts import SchemaFile, load_catalogue
from mesh.adapters.serde.strict import field_paths
from mesh.adapters.serde.wire import frame, unframe
from mesh.errors import SchemaNotFoundError, UnknownFieldError, UnknownSchemaIdError

__all__ = ["Decoded", "Serde"]


@dataclass(frozen=True, slots=True)
class Decoded:
    subject: str
    schema_id: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    subject: str
    writer: ParsedSchema
    reader: ParsedSchema | None


@dataclass(frozen=True, slots=True)
class _Writer:
    schema_id: int
    parsed: ParsedSchema


class Serde:
    """Encode and decode records of the catalogue's subjects through one registry."""

    def __init__(
        self,
        registry: SchemaRegistry,
        catalogue: Mapping[str, list[SchemaFile]] | None = None,
    ) -> None:
        self.registry = registry
        self._catalogue = dict(catalogue) if catalogue is not None else load_catalogue()
        self._writers: dict[tuple[str, int], _Writer] = {}
        self._plans: dict[tuple[int, int | None], _ReadPlan] = {}
        self._lock = threading.Lock()

    def encode(self, subject: str, record: Mapping[str, Any], version: int | None = None) -> bytes:
        """Frame ``record`` with the id of ``subject``'s schema (newest, or ``version``)."""
        writer = self._writers.get((subject, version or 0)) or self._writer(subject, version)
        return frame(writer.schema_id, encode_body(writer.parsed, record))

    def validate(self, subject: str, record: Mapping[str, Any]) -> None:
        """Raise RecordEncodeError unless ``record`` fits ``subject``'s newest schema exactly."""
        writer = self._writers.get((subject, 0)) or self._writer(subject, None)
        validate_body(writer.parsed, record)

    def decode(self, data: bytes, reader_version: int | None = None) -> Decoded:
        """Decode framed bytes; raise the SerdeError that says what is wrong with them."""
        schema_id, body = unframe(data)
        plan = self._plans.get((schema_id, reader_version)) or self._plan(schema_id, reader_version)
        return Decoded(plan.subject, schema_id, decode_body(body, plan.writer, plan.reader))

    def schema_id(self, subject: str, version: int | None = None) -> int:
        """The registry id of a subject's version, registering it if needed."""
        return (
            self._writers.get((subject, version or 0)) or self._writer(subject, version)
        ).schema_id

    def register_all(self) -> dict[str, int]:
        """Register every version of every subject, oldest first; returns newest ids."""
        ids = {}
        for subject, versions in self._catalogue.items():
            for schema_file in versions:
                ids[subject] = self.schema_id(subject, schema_file.version)
        return ids

    # -- caches ----------------------------------------------------------------------------

    def _file(self, subject: str, version: int | None) -> SchemaFile | None:
        versions = self._catalogue.get(subject, [])
        if not versions:
            return None
        if version is None:
            return versions[-1]
        return next((f for f in versions if f.version == version), None)

    def _writer(self, subject: str, version: int | None) -> _Writer:
        schema_file = self._file(subject, version)
        if schema_file is None:
            raise SchemaNotFoundError(
                f"no schema {subject!r} version {version or 'latest'} in schemas/; "
                "check the subject name"
            )
        registered = self.registry.register(subject, schema_file.text)
        writer = _Writer(registered.schema_id, parse(schema_file.schema))
        with self._lock:
            self._writers[(subject, version or 0)] = writer
        return writer

    def _refuse_unknown_fields(
        self, subject: str, schema_id: int, text: str, reader: SchemaFile
    ) -> None:
        """A writer schema that is none of the catalogue's versions may not carry a field the
        reader lacks: resolution would drop it silently (mesh.adapters.serde.strict)."""
        known = {canonical(f.text) for f in self._catalogue.get(subject, [])}
        if canonical(text) in known:
            return
        extra = sorted(field_paths(orjson.loads(text)) - field_paths(reader.schema))
        if extra:
            raise UnknownFieldError(
                f"schema id {schema_id} for {subject} has field(s) {', '.join(extra)} that no "
                f"version of the mesh's catalogue names (newest: v{reader.version}); a record "
                "written with it would lose them unseen. Register the schema in schemas/ "
                "(and upgrade readers first), or fix the writer"
            )

    def _plan(self, schema_id: int, reader_version: int | None) -> _ReadPlan:
        try:
            text = self.registry.schema_by_id(schema_id)
        except SchemaNotFoundError:
            raise UnknownSchemaIdError(
                f"schema id {schema_id} is not in the schema registry; the record was written "
                "against another registry (check MESH_SCHEMA_REGISTRY_URL) or is corrupt"
            ) from None
        schema = orjson.loads(text)
        subject = f"{schema.get('namespace', '')}.{schema.get('name', '')}".lstrip(".")
        local = self._file(subject, reader_version)
        # Resolution costs time on every record; skip it when reader and writer are one schema.
        reader = None
        if local is not None and canonical(local.text) != canonical(text):
            self._refuse_unknown_fields(subject, schema_id, text, local)
            reader = parse(local.schema)
        plan = _ReadPlan(subject, parse(schema), reader)
        with self._lock:
            self._plans[(schema_id, reader_version)] = plan
        return plan
