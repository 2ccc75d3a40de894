"""The bodies of the facts a sidecar writes about its agent and its tasks. Pure."""

from __future__ import annotations

from typing import Any

import orjson

from mesh.domain.identity import AgentKey
from mesh.domain.keys import rotation_bytes

__all__ = ["context_write", "heartbeat", "key_rotated", "retired", "task_event"]


def task_event(actor: str, task_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    """A ``mesh.tasks.TaskEvent``: ``fields`` are target, capability, summary, artifact_uris,
    value_usd and workflow (each optional)."""
    return {
        "task_id": task_id,
        "kind": kind,
        "actor": actor,
        "target": fields.get("target"),
        "capability": fields.get("capability"),
        "summary": fields.get("summary"),
        "artifact_uris": list(fields.get("artifact_uris", ())),
        "value_usd": fields.get("value_usd"),
        "workflow": fields.get("workflow"),
    }


def context_write(task_id: str, key: str, value: Any, expected_version: int) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "key": key,
        "value_json": orjson.dumps(value).decode(),
        "expected_version": expected_version,
    }


def heartbeat(agent_id: str, instance_id: str, sequence: int) -> dict[str, Any]:
    return {"agent_id": agent_id, "instance_id": instance_id, "sequence": sequence}


def retired(agent_id: str, reason: str, instance_id: str | None = None) -> dict[str, Any]:
    return {"agent_id": agent_id, "reason": reason, "instance_id": instance_id}


def key_rotated(agent_id: str, new: AgentKey, reason: str) -> dict[str, Any]:
    """A rotation to ``new``, with the new key's proof of possession (signed by it)."""
    return {
        "agent_id": agent_id,
        "new_public_key": new.public_bytes,
        "proof": new.sign(rotation_bytes(agent_id, new.public_bytes)),
        "reason": reason,
    }
