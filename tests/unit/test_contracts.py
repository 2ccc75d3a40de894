"""The golden test: published schema files never change, and the catalogue stays valid."""

import json
import shutil
from pathlib import Path

import pytest

import schemas
from mesh.adapters.serde.contracts import check_catalogue, load_catalogue, lock_catalogue
from mesh.errors import SchemaCatalogueError


def test_the_shipped_catalogue_is_valid_pinned_and_compatible() -> None:
    assert check_catalogue() == []


def test_every_field_of_every_schema_is_documented() -> None:
    def undocumented(node: object, path: str) -> list[str]:
        if isinstance(node, dict):
            missing = [f"{path}.{f['name']}" for f in node.get("fields", []) if not f.get("doc")]
            for f in node.get("fields", []):
                missing += undocumented(f["type"], f"{path}.{f['name']}")
            for key in ("items", "values"):
                missing += undocumented(node.get(key), path)
            return missing
        if isinstance(node, list):
            return [m for branch in node for m in undocumented(branch, path)]
        return []

    for versions in load_catalogue().values():
        for schema_file in versions:
            assert undocumented(schema_file.schema, schema_file.lock_key) == []


@pytest.fixture
def catalogue_copy(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schemas.ROOT, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def test_editing_a_published_version_fails_the_golden_check(catalogue_copy: Path) -> None:
    path = catalogue_copy / "mesh.registry.Heartbeat" / "v1.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "extra", "type": "int", "default": 0, "doc": "x"})
    path.write_text(json.dumps(schema))
    problems = check_catalogue(catalogue_copy)
    assert any("mesh.registry.Heartbeat/v1 changed after it was published" in p for p in problems)
    with pytest.raises(SchemaCatalogueError, match="add the next version file"):
        lock_catalogue(catalogue_copy)


def test_a_new_version_must_be_pinned_and_compatible(catalogue_copy: Path) -> None:
    v2 = json.loads((catalogue_copy / "mesh.registry.CapabilitiesChanged" / "v1.avsc").read_text())
    v2["fields"].append({"name": "successor", "type": "string", "doc": "who takes over"})
    (catalogue_copy / "mesh.registry.CapabilitiesChanged" / "v2.avsc").write_text(json.dumps(v2))
    problems = check_catalogue(catalogue_copy)
    assert any("mesh.registry.CapabilitiesChanged/v2 is not pinned" in p for p in problems)
    assert any(
        "mesh.registry.CapabilitiesChanged: v2 cannot read data written with v1" in p
        and "field successor" in p
        for p in problems
    )


def test_a_compatible_new_version_passes_once_locked(catalogue_copy: Path) -> None:
    v2 = json.loads((catalogue_copy / "mesh.registry.CapabilitiesChanged" / "v1.avsc").read_text())
    v2["fields"].append(
        {"name": "successor", "type": ["null", "string"], "default": None, "doc": "who"}
    )
    (catalogue_copy / "mesh.registry.CapabilitiesChanged" / "v2.avsc").write_text(json.dumps(v2))
    assert lock_catalogue(catalogue_copy) == ["mesh.registry.CapabilitiesChanged/v2"]
    assert check_catalogue(catalogue_copy) == []


def test_per_subject_level_is_honoured(catalogue_copy: Path) -> None:
    v2 = json.loads((catalogue_copy / "mesh.registry.CapabilitiesChanged" / "v1.avsc").read_text())
    v2["fields"].append({"name": "successor", "type": "string", "doc": "who takes over"})
    (catalogue_copy / "mesh.registry.CapabilitiesChanged" / "v2.avsc").write_text(json.dumps(v2))
    levels = {
        "default": "BACKWARD_TRANSITIVE",
        "subjects": {"mesh.registry.CapabilitiesChanged": "NONE"},
    }
    (catalogue_copy / "compatibility.json").write_text(json.dumps(levels))
    lock_catalogue(catalogue_copy)
    assert check_catalogue(catalogue_copy) == []


def test_envelope_signature_must_stay_last(catalogue_copy: Path) -> None:
    v2 = json.loads((catalogue_copy / "mesh.Envelope" / "v1.avsc").read_text())
    v2["fields"].append({"name": "late", "type": ["null", "string"], "default": None, "doc": "x"})
    (catalogue_copy / "mesh.Envelope" / "v2.avsc").write_text(json.dumps(v2))
    lock_catalogue(catalogue_copy)
    assert check_catalogue(catalogue_copy) == [
        "mesh.Envelope/v2: the envelope's last field must be 'signature' (the signature covers "
        "the bytes before it); move new fields above it"
    ]


def test_a_misplaced_file_is_named(catalogue_copy: Path) -> None:
    (catalogue_copy / "mesh.registry.Heartbeat" / "v3.avsc").write_text("{not json")
    assert "not valid JSON" in check_catalogue(catalogue_copy)[0]
