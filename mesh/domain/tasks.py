"""A task's shared context and its pure transitions: ``apply(state, event) -> state``.

* Duplicates are no-ops: the last 256 applied message ids are kept in the state.
* Reordering is harmless: the status is set by the event created last, and handoffs are kept
  in order of when they happened, whatever order they arrive in.
* Concurrent writers of one context key are serialised by expected-version checks: a write
  must name the version it read; a stale one is refused with the current version and writer,
  never merged silently.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from typing import Any

from mesh.errors import EventRejectedError, StaleWriteError

__all__ = ["ContextEntry", "Handoff", "TaskState", "apply", "joined"]

TASK_EVENT = "mesh.tasks.TaskEvent"
CONTEXT_WRITE = "mesh.tasks.ContextWrite"
_RECENT = 256


@dataclass(frozen=True, slots=True)
class ContextEntry:
    value_json: str
    version: int
    written_by: str


@dataclass(frozen=True, slots=True, order=True)
class Handoff:
    at_ms: int
    from_agent: str
    to_agent: str


@dataclass(frozen=True, slots=True)
class TaskState:
    task_id: str
    status: str = "NEW"
    status_at_ms: int = 0
    participants: tuple[str, ...] = ()
    handoffs: tuple[Handoff, ...] = ()
    context: dict[str, ContextEntry] = field(default_factory=dict)  # replaced, never mutated
    artifacts: tuple[str, ...] = ()
    recent_message_ids: tuple[str, ...] = ()
    version: int = 0
    updated_at_ms: int = 0


def apply(
    state: TaskState | None,
    subject: str,
    body: dict[str, Any],
    *,
    message_id: str,
    sender: str,
    at_ms: int,
) -> TaskState:
    """The task's state after one event; raise EventRejectedError if it cannot apply."""
    current = state or TaskState(task_id=body["task_id"])
    if message_id in current.recent_message_ids:
        return current
    if subject == TASK_EVENT:
        changed = _task_event(current, body, at_ms)
    elif subject == CONTEXT_WRITE:
        changed = _context_write(current, body, sender)
    else:
        raise EventRejectedError(f"the state projections do not take {subject} events")
    return replace(
        changed,
        recent_message_ids=(*current.recent_message_ids, message_id)[-_RECENT:],
        version=current.version + 1,
        updated_at_ms=max(current.updated_at_ms, at_ms),
    )


def joined(
    state: TaskState | None, task_id: str, sender: str, recipient: str, at_ms: int
) -> TaskState:
    """The task's state once a message between ``sender`` and ``recipient`` is seen on it:
    ``state`` itself (the same object) when both already take part. Idempotent, so the message
    id is not kept (a redelivered message finds both ends known and changes nothing)."""
    participants = _add(state.participants if state else (), sender, recipient)
    if state is not None and participants == state.participants:
        return state
    current = state or TaskState(task_id=task_id)
    return replace(
        current,
        participants=participants,
        version=current.version + 1,
        updated_at_ms=max(current.updated_at_ms, at_ms),
    )


def _task_event(state: TaskState, body: dict[str, Any], at_ms: int) -> TaskState:
    kind, actor, target = body["kind"], body["actor"], body.get("target")
    participants = _add(state.participants, actor, target)
    handoffs = state.handoffs
    if kind == "HANDED_OFF" and target:
        items = list(handoffs)
        bisect.insort(items, Handoff(at_ms, actor, target))
        handoffs = tuple(items)
    status, status_at = state.status, state.status_at_ms
    if at_ms >= state.status_at_ms:
        status, status_at = kind, at_ms
    artifacts = _add(state.artifacts, *body.get("artifact_uris", ()))
    return replace(
        state,
        status=status,
        status_at_ms=status_at,
        participants=participants,
        handoffs=handoffs,
        artifacts=artifacts,
    )


def _context_write(state: TaskState, body: dict[str, Any], sender: str) -> TaskState:
    key, expected = body["key"], body["expected_version"]
    current = state.context.get(key)
    actual = current.version if current else 0
    if expected != actual:
        holder = f", last written by {current.written_by}" if current else ""
        raise StaleWriteError(
            f"write of {key!r} on task {state.task_id!r} by {sender!r} expected version "
            f"{expected} but the key is at version {actual}{holder}; re-read the context and "
            "retry with the current version"
        )
    # A delete is a write of JSON null: the key keeps counting versions, so a writer that read
    # the key before the delete cannot slip in after a re-creation (no ABA).
    value = body["value_json"] if body["value_json"] is not None else "null"
    context = {**state.context, key: ContextEntry(value, actual + 1, sender)}
    return replace(state, context=context, participants=_add(state.participants, sender))


def _add(items: tuple[str, ...], *new: str | None) -> tuple[str, ...]:
    out = list(items)
    for item in new:
        if item and item not in out:
            out.append(item)
    return tuple(out)
