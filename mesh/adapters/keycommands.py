"""Operator key commands: revoke an agent's key, or rotate it to a new one.

Both are registry events signed with the operator's key (``KeyRevoked``, ``KeyRotated``); the
registry processor checks them, quarantines or moves the agent, and appends the mesh's
countersigned statement to ``mesh.keys.v1``. A command is confirmed only when that statement
is read back from the directory: an operator is never told a key was revoked when the registry
is not running to act on it.
"""

from __future__ import annotations

import time
from typing import Any

from mesh.adapters.kafka.keys import KeyTable
from mesh.adapters.kafka.producing import produce_one
from mesh.adapters.keyfiles import mesh_anchor, operator_key
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.keys import KeyStatement, KeyStatus, rotation_bytes
from mesh.domain.topics import REGISTRY_EVENTS
from mesh.errors import MeshError, UnknownTargetError
from mesh.settings import Cluster

__all__ = ["revoke_key", "rotate_key"]


class _Directory:
    """One registry connection and one reader of ``mesh.keys.v1`` for a whole command: the
    confirmation reads only what arrived since the last look."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.registry = open_registry(cluster.settings, cluster)
        self.serde = Serde(self.registry)
        try:
            self.table = KeyTable(cluster, self.serde, mesh_anchor(cluster.settings))
        except MeshError:
            self.registry.close()
            raise

    def statement(self, agent_id: str) -> KeyStatement | None:
        self.table.catch_up()
        return self.table.directory.get(agent_id)

    def in_force(self, agent_id: str) -> KeyStatement:
        statement = self.statement(agent_id)
        if statement is None:
            raise UnknownTargetError(
                f"the mesh vouches for no key of {agent_id!r} (mesh.keys.v1); nothing was "
                "sent. `mesh agents` lists the registered agents"
            )
        return statement

    def send(self, agent_id: str, subject: str, body: dict[str, Any]) -> None:
        operator = operator_key(self.cluster.settings)
        envelope = new_envelope(
            operator.agent_id, "", recipient_kind=RecipientKind.BROADCAST, conversation_id="keys"
        )
        value = MessageCodec(self.serde, PublicKeys()).seal(envelope, subject, body, operator)
        topic = self.cluster.topic(REGISTRY_EVENTS)
        produce_one(self.cluster, topic, agent_id, value, "the command")

    def confirmed(self, agent_id: str, serial: int, wait_s: float) -> KeyStatement:
        deadline = time.monotonic() + wait_s
        while True:
            statement = self.statement(agent_id)
            if statement is not None and statement.serial > serial:
                return statement
            if time.monotonic() > deadline:
                raise MeshError(
                    f"the command was sent, but the registry did not record it within "
                    f"{wait_s:.0f}s (no new statement on mesh.keys.v1); is the registry "
                    "processor running? It dead-letters a command it refuses, with the reason, "
                    "to mesh.dlq.v1"
                )
            time.sleep(0.2)

    def close(self) -> None:
        self.table.close()
        self.registry.close()


def revoke_key(cluster: Cluster, agent_id: str, reason: str, wait_s: float) -> KeyStatement:
    """Revoke the key the mesh vouches for; returns the REVOKED statement once in force."""
    directory = _Directory(cluster)
    try:
        in_force = directory.in_force(agent_id)
        if in_force.status is KeyStatus.REVOKED:
            return in_force
        body = {"agent_id": agent_id, "public_key": in_force.public_key, "reason": reason}
        directory.send(agent_id, "mesh.registry.KeyRevoked", body)
        return directory.confirmed(agent_id, in_force.serial, wait_s)
    finally:
        directory.close()


def rotate_key(
    cluster: Cluster, agent_id: str, new_key: AgentKey, reason: str, wait_s: float
) -> KeyStatement:
    """Move ``agent_id`` to ``new_key`` (an operator's rotation: also ends a quarantine)."""
    directory = _Directory(cluster)
    try:
        in_force = directory.in_force(agent_id)
        new_public = new_key.public_bytes
        if in_force.public_key == new_public and in_force.status is KeyStatus.ACTIVE:
            return in_force
        body = {
            "agent_id": agent_id,
            "new_public_key": new_public,
            "proof": new_key.sign(rotation_bytes(agent_id, new_public)),
            "reason": reason,
        }
        directory.send(agent_id, "mesh.registry.KeyRotated", body)
        return directory.confirmed(agent_id, in_force.serial, wait_s)
    finally:
        directory.close()
