"""Signed messages: seal, open, and every way opening refuses."""

import os
import stat
from pathlib import Path

import pytest

from mesh.adapters.keyfiles import load_or_create_key
from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.errors import BadSignatureError, KeyFileError, OversizeMessageError, UnknownSenderError

BODY = {"role": "AGENT", "parts": [{"kind": "TEXT", "text": "hello"}], "metadata": {"k": "v"}}


@pytest.fixture
def alice() -> AgentKey:
    return AgentKey.generate("alice")


@pytest.fixture
def codec(alice: AgentKey) -> MessageCodec:
    return MessageCodec(Serde(InMemoryRegistry()), PublicKeys({"alice": alice.public_bytes}))


def test_sealed_message_opens_with_everything_intact(codec: MessageCodec, alice: AgentKey) -> None:
    envelope = new_envelope(
        "alice",
        "research",
        recipient_kind=RecipientKind.CAPABILITY,
        task_id="t-1",
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    opened = codec.open(codec.seal(envelope, "mesh.a2a.Message", BODY, alice))
    assert opened.envelope == envelope
    assert opened.body_subject == "mesh.a2a.Message"
    assert opened.body["parts"][0]["text"] == "hello"
    assert opened.body["metadata"] == {"k": "v"}


def test_reply_carries_causation_and_hops() -> None:
    first = new_envelope("alice", "bob", task_id="t")
    reply = first.reply("bob", "alice")
    assert reply.causation_id == first.message_id
    assert reply.correlation_id == first.correlation_id
    assert reply.hop_count == 1
    assert reply.task_id == "t"


def test_every_altered_byte_is_caught(codec: MessageCodec, alice: AgentKey) -> None:
    data = codec.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", BODY, alice)
    signed_part = len(data) - 66  # varint(64) is 2 bytes, then the 64-byte signature
    for index in range(5, signed_part):
        altered = bytearray(data)
        altered[index] ^= 0x01
        with pytest.raises(Exception) as caught:
            codec.open(bytes(altered))
        assert caught.type.__module__ == "mesh.errors", (index, caught.type)


def test_signature_by_another_key(codec: MessageCodec) -> None:
    impostor = AgentKey.generate("alice")
    data = codec.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", BODY, impostor)
    with pytest.raises(BadSignatureError, match="does not match 'alice''s registered key"):
        codec.open(data)


def test_unsigned_message_is_refused(codec: MessageCodec) -> None:
    data = codec.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", BODY, None)
    with pytest.raises(BadSignatureError, match="is 0 bytes, an Ed25519 signature is 64"):
        codec.open(data)
    assert codec.open(data, verify=False).body["parts"][0]["text"] == "hello"


def test_unregistered_sender(codec: MessageCodec) -> None:
    mallory = AgentKey.generate("mallory")
    data = codec.seal(new_envelope("mallory", "bob"), "mesh.a2a.Message", BODY, mallory)
    with pytest.raises(
        UnknownSenderError, match="no public key is registered for sender 'mallory'"
    ):
        codec.open(data)


def test_oversize_messages_are_refused_both_ways(alice: AgentKey) -> None:
    codec = MessageCodec(
        Serde(InMemoryRegistry()), PublicKeys({"alice": alice.public_bytes}), max_bytes=2048
    )
    big = {"role": "AGENT", "parts": [{"kind": "TEXT", "text": "x" * 4096}]}
    with pytest.raises(OversizeMessageError, match="over the limit of 2048"):
        codec.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", big, alice)
    roomy = MessageCodec(codec.serde, codec.keys)
    data = roomy.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", big, alice)
    with pytest.raises(OversizeMessageError, match="message received is"):
        codec.open(data)


def test_a_bare_body_is_not_a_message(codec: MessageCodec) -> None:
    data = codec.serde.encode("mesh.a2a.Message", BODY)
    with pytest.raises(BadSignatureError, match=r"expected a mesh\.Envelope"):
        codec.open(data)


def test_key_file_is_created_owner_only_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "alice.key"
    first = load_or_create_key(path, "alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path, "alice").public_bytes == first.public_bytes


def test_a_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    load_or_create_key(path, "alice")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path, "alice")


def test_a_wrong_size_public_key_is_refused() -> None:
    with pytest.raises(KeyFileError, match="an Ed25519 key is 32"):
        PublicKeys({"x": b"short"})
