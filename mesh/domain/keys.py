"""The key directory: which key each agent signs with, as the mesh vouches for it (pure).

Agent keys used to be read from ``mesh.registry.v1``, which the mesh does not sign: whoever
could write that topic could substitute a key. Now the registry processor, the one writer that
checked the agent's proof of possession, *countersigns* each key with the mesh's key, as a
:class:`KeyStatement` appended to ``mesh.keys.v1`` (delete policy, infinite retention, never
compacted), and every reader takes agent keys only from there.

* A statement is ``(agent, key, serial, status)`` signed by the mesh. ``serial`` grows by one
  with every change of the agent's key: first registration, rotation, revocation, a new key
  after retirement.
* A reader folds the topic in order and keeps, per agent, the statement with the highest
  serial whose signature holds. A forged statement (no mesh signature) changes nothing; a
  captured old statement produced again has a lower serial and changes nothing, so a replay
  cannot bring back a rotated or revoked key. The topic is never compacted, so a reader that
  starts late sees the same history.
* ``REVOKED`` ends a key for good: the agent is quarantined, and its messages under that key are
  refused by every reader. Only an operator-signed rotation gives it a key again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from mesh.domain.identity import AgentKey, verify_signature
from mesh.errors import BadSignatureError, RevokedKeyError, UnknownSenderError

__all__ = [
    "KEY_STATEMENT_SUBJECT",
    "KeyDirectory",
    "KeyStatement",
    "KeyStatus",
    "countersign",
    "rotation_bytes",
    "statement_bytes",
]

KEY_STATEMENT_SUBJECT = "mesh.keys.KeyStatement"
KEY_DOMAIN = b"mesh.keys.v1\x00"
ROTATION_DOMAIN = b"mesh.keys.rotate.v1\x00"


class KeyStatus(StrEnum):
    ACTIVE = "ACTIVE"
    RETIRED = "RETIRED"
    REVOKED = "REVOKED"


@dataclass(frozen=True, slots=True)
class KeyStatement:
    agent_id: str
    public_key: bytes
    serial: int
    status: KeyStatus
    reason: str
    at_ms: int
    signature: bytes = b""

    def to_record(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "public_key": self.public_key,
            "serial": self.serial,
            "status": self.status.value,
            "reason": self.reason,
            "at": self.at_ms,
            "signature": self.signature,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> KeyStatement:
        return cls(
            record["agent_id"],
            bytes(record["public_key"]),
            record["serial"],
            KeyStatus(record["status"]),
            record["reason"],
            record["at"],
            bytes(record["signature"]),
        )


def statement_bytes(statement: KeyStatement) -> bytes:
    """What the mesh's signature covers (lengths prefixed: no two statements share bytes)."""
    agent = statement.agent_id.encode()
    return b"".join(
        (
            KEY_DOMAIN,
            struct.pack(">H", len(agent)),
            agent,
            struct.pack(">H", len(statement.public_key)),
            statement.public_key,
            struct.pack(">Q", statement.serial),
            statement.status.value.encode(),
        )
    )


def rotation_bytes(agent_id: str, new_public_key: bytes) -> bytes:
    """What a rotation's proof (the new key's signature) covers."""
    agent = agent_id.encode()
    return ROTATION_DOMAIN + struct.pack(">H", len(agent)) + agent + new_public_key


def countersign(statement: KeyStatement, mesh: AgentKey) -> KeyStatement:
    return replace(statement, signature=mesh.sign(statement_bytes(statement)))


class KeyDirectory:
    """The fold of ``mesh.keys.v1`` under the mesh's public key (see the module docstring)."""

    def __init__(self, mesh_public: bytes) -> None:
        self.mesh_public = mesh_public
        self.current: dict[str, KeyStatement] = {}
        #: Every statement applied, per agent, in serial order (for :meth:`as_of`).
        self.history: dict[str, list[KeyStatement]] = {}

    def apply(self, statement: KeyStatement) -> str | None:
        """Fold one statement; returns why it changed nothing (None: it applied)."""
        try:
            verify_signature(
                self.mesh_public, statement.signature, statement_bytes(statement), "the mesh"
            )
        except BadSignatureError:
            return (
                f"a key statement for {statement.agent_id!r} not signed by the mesh's key "
                "(forged); ignored"
            )
        held = self.current.get(statement.agent_id)
        if held is not None and statement.serial <= held.serial:
            if statement == held:
                return None  # the same statement read twice
            return (
                f"a key statement for {statement.agent_id!r} with serial {statement.serial}, "
                f"not newer than the one in force ({held.serial}): a replay; ignored"
            )
        self.current[statement.agent_id] = statement
        self.history.setdefault(statement.agent_id, []).append(statement)
        return None

    def as_of(self, at_ms: int) -> KeyDirectory:
        """The directory as it stood at ``at_ms`` (statements made by then): history is judged
        by the keys in force when it was written, not by today's."""
        then = KeyDirectory(self.mesh_public)
        for agent_id, statements in self.history.items():
            made = [s for s in statements if s.at_ms <= at_ms]
            if made:
                then.current[agent_id] = made[-1]
        return then

    def key_for(self, agent_id: str) -> bytes:
        """The key ``agent_id`` signs with; raise if the mesh vouches for none, or revoked it."""
        statement = self.current.get(agent_id)
        if statement is None:
            raise UnknownSenderError(
                f"sender {agent_id!r} has no key countersigned by the mesh (mesh.keys.v1); it "
                "must register (attach through a sidecar) before it sends"
            )
        if statement.status is KeyStatus.RETIRED:
            raise UnknownSenderError(
                f"sender {agent_id!r} retired; it must register again before it sends"
            )
        if statement.status is KeyStatus.REVOKED:
            raise RevokedKeyError(
                f"the key of {agent_id!r} was revoked ({statement.reason}); the agent is "
                "quarantined until an operator rotates its key"
            )
        return statement.public_key

    def get(self, agent_id: str) -> KeyStatement | None:
        return self.current.get(agent_id)
