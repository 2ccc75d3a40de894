"""The schema catalogue on disk: subjects, their versions, compatibility levels and the lock.

Pure file reading and pure checks; no registry, no Kafka. ``mesh schemas check`` and the
golden test call :func:`check_catalogue`, which returns every problem found (empty: all good).

Rules enforced here, with the reason:

* A published ``v<N>.avsc`` never changes (``lock.json`` pins its digest), because data written
  with it lives in the log forever and the registry already handed out an id for it.
* Every version is compatible with the earlier ones under the subject's level
  (``BACKWARD_TRANSITIVE`` by default), because processors replay the whole log.
* The envelope's last field is ``signature``, because the signature covers the bytes before it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import schemas
from mesh.adapters.serde.compat import check_versions
from mesh.errors import SchemaCatalogueError

__all__ = [
    "ENVELOPE_SUBJECT",
    "SchemaFile",
    "check_catalogue",
    "latest",
    "load_catalogue",
    "lock_catalogue",
    "subject_level",
]

ENVELOPE_SUBJECT = "mesh.Envelope"
LOCK_FILE = "lock.json"
LEVELS_FILE = "compatibility.json"


@dataclass(frozen=True, slots=True)
class SchemaFile:
    """One version of one subject, as read from ``<subject>/v<version>.avsc``."""

    subject: str
    version: int
    path: Path
    schema: dict[str, Any]

    @property
    def text(self) -> str:
        """The schema as compact JSON: what is registered and hashed."""
        return json.dumps(self.schema, separators=(",", ":"), sort_keys=True)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def lock_key(self) -> str:
        return f"{self.subject}/v{self.version}"


def load_catalogue(root: Path = schemas.ROOT) -> dict[str, list[SchemaFile]]:
    """Every subject's versions, oldest first. Raise SchemaCatalogueError on an unreadable file."""
    found: dict[str, list[SchemaFile]] = {}
    for path in sorted(root.glob("*/v*.avsc")):
        found.setdefault(path.parent.name, []).append(_read(path))
    for versions in found.values():
        versions.sort(key=lambda f: f.version)
    return found


@cache
def _default_catalogue() -> dict[str, list[SchemaFile]]:
    return load_catalogue()


def latest(subject: str) -> SchemaFile:
    """The newest version of a subject of the installed catalogue."""
    versions = _default_catalogue().get(subject)
    if not versions:
        raise SchemaCatalogueError(f"no schema subject {subject!r} in schemas/; check the name")
    return versions[-1]


def subject_level(subject: str, root: Path = schemas.ROOT) -> str:
    """The compatibility level of a subject (compatibility.json; default BACKWARD_TRANSITIVE)."""
    levels = json.loads((root / LEVELS_FILE).read_text())
    return str(
        levels.get("subjects", {}).get(subject, levels.get("default", "BACKWARD_TRANSITIVE"))
    )


def check_catalogue(root: Path = schemas.ROOT) -> list[str]:
    """Every problem with the catalogue: lock drift, incompatible versions, envelope shape."""
    try:
        catalogue = load_catalogue(root)
    except SchemaCatalogueError as exc:
        return [str(exc)]
    problems = _lock_problems(catalogue, root)
    for subject, versions in catalogue.items():
        problems += _numbering_problems(subject, versions)
        problems += check_versions(
            subject, [(f.version, f.schema) for f in versions], subject_level(subject, root)
        )
    problems += _envelope_problems(catalogue.get(ENVELOPE_SUBJECT, []))
    return problems


def lock_catalogue(root: Path = schemas.ROOT) -> list[str]:
    """Pin every new version in lock.json; refuse to re-pin a changed one. Returns the added."""
    catalogue = load_catalogue(root)
    lock = _read_lock(root)
    changed = [
        f.lock_key
        for versions in catalogue.values()
        for f in versions
        if f.lock_key in lock and lock[f.lock_key] != f.digest
    ]
    if changed:
        raise SchemaCatalogueError(
            f"{', '.join(changed)} changed after it was published; revert the change and add "
            "the next version file (v<N+1>.avsc) instead"
        )
    added = [f for vs in catalogue.values() for f in vs if f.lock_key not in lock]
    lock.update({f.lock_key: f.digest for f in added})
    (root / LOCK_FILE).write_text(json.dumps(dict(sorted(lock.items())), indent=2) + "\n")
    return [f.lock_key for f in added]


def _read(path: Path) -> SchemaFile:
    stem = path.stem
    if not stem[1:].isdigit():
        raise SchemaCatalogueError(f"{path.name}: name schema files v<N>.avsc, e.g. v1.avsc")
    try:
        schema = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SchemaCatalogueError(f"{path}: not valid JSON ({exc})") from exc
    full_name = f"{schema.get('namespace', '')}.{schema.get('name', '')}".lstrip(".")
    if full_name != path.parent.name:
        raise SchemaCatalogueError(
            f"{path}: record {full_name!r} lives under {path.parent.name}/; "
            "the directory must be the record's full name"
        )
    return SchemaFile(path.parent.name, int(stem[1:]), path, schema)


def _read_lock(root: Path) -> dict[str, str]:
    lock_path = root / LOCK_FILE
    return dict(json.loads(lock_path.read_text())) if lock_path.exists() else {}


def _lock_problems(catalogue: dict[str, list[SchemaFile]], root: Path) -> list[str]:
    lock = _read_lock(root)
    files = {f.lock_key: f for vs in catalogue.values() for f in vs}
    problems = []
    for key, schema_file in files.items():
        if key not in lock:
            problems.append(f"{key} is not pinned in schemas/{LOCK_FILE}; run `mesh schemas lock`")
        elif lock[key] != schema_file.digest:
            problems.append(
                f"{key} changed after it was published (digest differs from schemas/{LOCK_FILE}); "
                "revert it and add the change as the next version file instead"
            )
    problems += [
        f"{key} is pinned but its file is gone; restore it" for key in lock if key not in files
    ]
    return problems


def _numbering_problems(subject: str, versions: list[SchemaFile]) -> list[str]:
    numbers = [f.version for f in versions]
    if numbers != list(range(1, len(numbers) + 1)):
        return [f"{subject}: versions {numbers} must run 1, 2, 3, ... with no gap"]
    return []


def _envelope_problems(versions: list[SchemaFile]) -> list[str]:
    problems = []
    for f in versions:
        fields = [field["name"] for field in f.schema.get("fields", [])]
        if not fields or fields[-1] != "signature":
            problems.append(
                f"{f.lock_key}: the envelope's last field must be 'signature' (the signature "
                "covers the bytes before it); move new fields above it"
            )
    return problems
