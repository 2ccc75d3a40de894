import json

import pytest

from mesh.adapters.schemaregistry.core import canonical
from mesh.adapters.serde.compat import check_versions
from mesh.errors import InvalidSchemaError


def record(*fields: dict) -> dict:
    return {"type": "record", "name": "Thing", "namespace": "t", "fields": list(fields)}


V1 = record({"name": "a", "type": "string"})
V2_WITH_DEFAULT = record(
    {"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0}
)
V2_NO_DEFAULT = record({"name": "a", "type": "string"}, {"name": "b", "type": "int"})
V3_DROPS_A = record({"name": "b", "type": "int", "default": 0})


def test_adding_a_field_with_a_default_is_backward_compatible() -> None:
    assert check_versions("t.Thing", [(1, V1), (2, V2_WITH_DEFAULT)], "BACKWARD_TRANSITIVE") == []


def test_adding_a_field_without_default_names_subject_versions_and_field() -> None:
    problems = check_versions("t.Thing", [(1, V1), (2, V2_NO_DEFAULT)], "BACKWARD_TRANSITIVE")
    assert len(problems) == 1
    assert problems[0].startswith("t.Thing: v2 cannot read data written with v1")
    assert "field b" in problems[0]
    assert "reader_field_missing_default_value" in problems[0]


def test_transitive_checks_every_earlier_version() -> None:
    # v3 drops 'a' (fine for v3 reading v2: b has a default) but v1 has no 'b'... v3 reads
    # v1 fine too; FORWARD_TRANSITIVE catches that v1 cannot read v3 (a has no default).
    versions = [(1, V1), (2, V2_WITH_DEFAULT), (3, V3_DROPS_A)]
    assert check_versions("t.Thing", versions, "BACKWARD_TRANSITIVE") == []
    forward = check_versions("t.Thing", versions, "FORWARD_TRANSITIVE")
    assert any("v1 cannot read data written with v3" in p for p in forward)
    assert any("v2 cannot read data written with v3" in p for p in forward)
    assert not any("v1 cannot read data written with v2" in p for p in forward)


def test_non_transitive_checks_only_the_previous_version() -> None:
    changed_type = record({"name": "a", "type": "int"})
    versions = [(1, V1), (2, changed_type), (3, changed_type)]
    assert check_versions("t.Thing", versions, "BACKWARD") != []  # v2 vs v1 fails
    assert check_versions("t.Thing", versions[1:], "BACKWARD") == []


def test_none_allows_anything_and_unknown_levels_are_named() -> None:
    assert check_versions("t.Thing", [(1, V1), (2, V2_NO_DEFAULT)], "NONE") == []
    assert (
        "unknown compatibility level 'SOMETIMES'"
        in check_versions("t.Thing", [(1, V1), (2, V1)], "SOMETIMES")[0]
    )


def test_nested_field_is_named_with_its_path() -> None:
    inner_v1 = {"type": "record", "name": "In", "fields": [{"name": "x", "type": "int"}]}
    inner_v2 = {
        "type": "record",
        "name": "In",
        "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "int"}],
    }
    problems = check_versions(
        "t.Thing",
        [
            (1, record({"name": "inner", "type": inner_v1})),
            (2, record({"name": "inner", "type": inner_v2})),
        ],
        "BACKWARD",
    )
    assert "field inner.y" in problems[0]


def test_canonical_ignores_spelling_and_rejects_non_avro() -> None:
    assert canonical(json.dumps(V1)) == canonical(json.dumps(V1, indent=4))
    with pytest.raises(InvalidSchemaError):
        canonical('{"type": "record", "name": "X"}')
