"""Serde through the in-memory registry: round trips across versions and each bad input."""

import struct
from pathlib import Path

import pytest

from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.wire import frame, unframe
from mesh.errors import (
    MalformedMessageError,
    RecordEncodeError,
    TruncatedBodyError,
    UnknownFieldError,
    UnknownSchemaIdError,
    WrongMagicByteError,
)

HEARTBEAT = "mesh.registry.Heartbeat"


@pytest.fixture
def serde() -> Serde:
    return Serde(InMemoryRegistry())


def test_wire_format_is_magic_zero_then_big_endian_id() -> None:
    assert frame(258, b"body") == b"\x00\x00\x00\x01\x02body"
    schema_id, body = unframe(b"\x00\x00\x00\x01\x02body")
    assert (schema_id, bytes(body)) == (258, b"body")


def test_round_trip_of_the_newest_version(serde: Serde) -> None:
    record = {"agent_id": "a", "instance_id": "i", "sequence": 7, "load": 0.5, "in_flight_tasks": 2}
    decoded = serde.decode(serde.encode(HEARTBEAT, record))
    assert decoded.subject == HEARTBEAT
    assert decoded.record == record


def test_v1_data_read_by_a_v2_reader_gets_defaults(serde: Serde) -> None:
    data = serde.encode(HEARTBEAT, {"agent_id": "a", "instance_id": "i", "sequence": 1}, version=1)
    assert serde.decode(data).record == {
        "agent_id": "a", "instance_id": "i", "sequence": 1, "load": 0.0, "in_flight_tasks": 0,
    }  # fmt: skip


def test_v2_data_read_by_a_v1_reader_drops_new_fields(serde: Serde) -> None:
    data = serde.encode(
        HEARTBEAT,
        {"agent_id": "a", "instance_id": "i", "sequence": 1, "load": 0.9, "in_flight_tasks": 4},
    )
    assert serde.decode(data, reader_version=1).record == {
        "agent_id": "a", "instance_id": "i", "sequence": 1,
    }  # fmt: skip


def test_versions_get_distinct_ids(serde: Serde) -> None:
    assert serde.schema_id(HEARTBEAT, 1) != serde.schema_id(HEARTBEAT, 2)
    assert serde.schema_id(HEARTBEAT) == serde.schema_id(HEARTBEAT, 2)


def test_timestamps_stay_epoch_millis(serde: Serde) -> None:
    record = {
        "reason_code": "x",
        "reason": "y",
        "original": b"\x01",
        "detected_by": "t",
        "detected_at": 1_700_000_000_123,
    }
    decoded = serde.decode(serde.encode("mesh.dlq.DeadLetter", record)).record
    assert decoded["detected_at"] == 1_700_000_000_123


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x01"])
def test_too_short_is_malformed(serde: Serde, data: bytes) -> None:
    with pytest.raises(MalformedMessageError, match="shorter than the 5-byte wire-format header"):
        serde.decode(data)


def test_wrong_magic_byte(serde: Serde) -> None:
    with pytest.raises(WrongMagicByteError, match="magic byte is 123, expected 0"):
        serde.decode(b'{"json": true}')


def test_unknown_schema_id(serde: Serde) -> None:
    with pytest.raises(
        UnknownSchemaIdError, match="schema id 999999 is not in the schema registry"
    ):
        serde.decode(struct.pack(">bI", 0, 999_999) + b"\x02a")


def test_truncated_body(serde: Serde) -> None:
    data = serde.encode(HEARTBEAT, {"agent_id": "agent-1", "instance_id": "i", "sequence": 1})
    with pytest.raises(TruncatedBodyError, match="truncated or corrupt"):
        serde.decode(data[:-6])


def test_trailing_junk_is_refused(serde: Serde) -> None:
    data = serde.encode(HEARTBEAT, {"agent_id": "a", "instance_id": "i", "sequence": 1})
    with pytest.raises(TruncatedBodyError, match="bytes left over"):
        serde.decode(data + b"\x00\x00")


def test_record_that_does_not_fit_its_schema(serde: Serde) -> None:
    with pytest.raises(RecordEncodeError, match="does not match schema"):
        serde.encode(HEARTBEAT, {"agent_id": "a", "instance_id": "i", "sequence": "not a long"})


def test_every_bad_input_error_shares_one_root() -> None:
    from mesh.errors import MeshError, SerdeError

    for error in (
        MalformedMessageError,
        WrongMagicByteError,
        UnknownSchemaIdError,
        TruncatedBodyError,
        RecordEncodeError,
    ):
        assert issubclass(error, SerdeError)
        assert issubclass(error, MeshError)


def test_validation_accepts_a_record_whose_unions_take_any_branch(serde: Serde) -> None:
    from sidecar.core import MESSAGE_SUBJECT, message_body

    serde.validate(MESSAGE_SUBJECT, message_body("hello", {"n": 1}))  # nullable fields set
    serde.validate(MESSAGE_SUBJECT, message_body("hello", None))  # and left null


def test_validation_names_the_field_a_union_refuses(serde: Serde) -> None:
    from sidecar.core import MESSAGE_SUBJECT, message_body

    body = message_body("hello", None)
    body["parts"][0]["mime_type"] = 42  # a ["null", "string"] union given an int
    with pytest.raises(RecordEncodeError, match=r"does not match schema .*mime_type"):
        serde.validate(MESSAGE_SUBJECT, body)


MESSAGE = "mesh.a2a.Message"


def test_an_unknown_field_nested_anywhere_is_refused_before_sending(serde: Serde) -> None:
    """Issue 20: strict at every edge. fastavro's writer ignores a key its schema does not
    name; the sidecar refuses it, naming where it is."""
    good = {"role": "AGENT", "parts": [{"kind": "TEXT", "text": "x"}], "metadata": {"a": "b"}}
    serde.validate(MESSAGE, good)
    smuggled = {**good, "parts": [{"kind": "TEXT", "text": "x", "exfil": "secret"}]}
    with pytest.raises(RecordEncodeError, match=r"unknown field\(s\) parts\[0\]\.exfil"):
        serde.validate(MESSAGE, smuggled)


def test_a_writer_schema_outside_the_catalogue_with_an_extra_field_is_refused(
    serde: Serde,
) -> None:
    """A schema registered outside the catalogue with a nested field the mesh does not name:
    reading its records would drop the field unseen, so they are refused (dead-lettered)."""
    import io
    import json

    import fastavro

    avsc = Path(__file__).resolve().parents[2] / "schemas" / "mesh.a2a.Message" / "v1.avsc"
    schema = json.loads(avsc.read_text())
    part = schema["fields"][1]["type"]["items"]
    part["fields"].append({"name": "exfil", "type": "string", "default": ""})
    text = json.dumps(schema)
    schema_id = serde.registry.register(MESSAGE, text).schema_id
    buffer = io.BytesIO()
    record = {"role": "AGENT", "metadata": {},
              "parts": [{"kind": "TEXT", "text": "x", "exfil": "secret"}]}  # fmt: skip
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    with pytest.raises(UnknownFieldError, match=r"has field\(s\) parts\[\]\.exfil"):
        serde.decode(frame(schema_id, buffer.getvalue()))
    assert serde.decode(serde.encode(MESSAGE, {**record, "parts": [{"kind": "TEXT"}]})).record
