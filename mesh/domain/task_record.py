"""TaskState <-> the ``mesh.state.TaskState`` Avro record."""

from __future__ import annotations

from typing import Any

from mesh.domain.tasks import ContextEntry, Handoff, TaskState

__all__ = ["from_record", "to_record"]


def to_record(state: TaskState) -> dict[str, Any]:
    return {
        "task_id": state.task_id,
        "status": state.status,
        "status_at": state.status_at_ms,
        "participants": list(state.participants),
        "handoffs": [
            {"from_agent": h.from_agent, "to_agent": h.to_agent, "at": h.at_ms}
            for h in state.handoffs
        ],
        "context": {
            key: {"value_json": e.value_json, "version": e.version, "written_by": e.written_by}
            for key, e in state.context.items()
        },
        "artifacts": list(state.artifacts),
        "recent_message_ids": list(state.recent_message_ids),
        "version": state.version,
        "updated_at": state.updated_at_ms,
    }


def from_record(record: dict[str, Any]) -> TaskState:
    return TaskState(
        task_id=record["task_id"],
        status=record["status"],
        status_at_ms=record["status_at"],
        participants=tuple(record["participants"]),
        handoffs=tuple(
            Handoff(h["at"], h["from_agent"], h["to_agent"]) for h in record["handoffs"]
        ),
        context={
            key: ContextEntry(v["value_json"], v["version"], v["written_by"])
            for key, v in record["context"].items()
        },
        artifacts=tuple(record["artifacts"]),
        recent_message_ids=tuple(record["recent_message_ids"]),
        version=record["version"],
        updated_at_ms=record["updated_at"],
    )
