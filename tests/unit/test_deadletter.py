from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.domain.deadletter import DEAD_LETTER_SUBJECT, SourceCoordinates, dead_letter
from mesh.errors import BadSignatureError


def test_dead_letter_keeps_reason_coordinates_and_original_bytes() -> None:
    original = b"\x00\x00\x00\x00\x01garbage"
    record = dead_letter(
        BadSignatureError("signature does not match"),
        original,
        "sidecar:research",
        SourceCoordinates("mesh.inbox.research.v1", 2, 41, b"task-1"),
        now_ms=1_700_000_000_000,
    )
    serde = Serde(InMemoryRegistry())
    decoded = serde.decode(serde.encode(DEAD_LETTER_SUBJECT, record)).record
    assert decoded == {
        "reason_code": "bad_signature",
        "reason": "signature does not match",
        "source_topic": "mesh.inbox.research.v1",
        "source_partition": 2,
        "source_offset": 41,
        "source_key": b"task-1",
        "original": original,
        "detected_by": "sidecar:research",
        "detected_at": 1_700_000_000_000,
    }
