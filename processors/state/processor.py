"""The state projections processor: ``mesh.tasks.v1`` -> ``mesh.state.v1``.

Every task event and context write is signed by its sender; it is verified against the key the
registry holds for the sender (``keys``), so a forged write never reaches the shared context.
"""

from __future__ import annotations

from typing import Any

from mesh.errors import EventRejectedError
from mesh.identity import KeyResolver
from mesh.topics import STATE, TASKS
from processors.api import Context, Event, PunctuationContext
from processors.state.records import from_record, to_record
from processors.state.state import TaskState, apply

__all__ = ["StateProcessor"]


class StateProcessor:
    name = "state"
    inputs: tuple[str, ...] = (TASKS,)
    store_topic = STATE
    store_subject = "mesh.state.TaskState"
    punctuate_every_ms: int | None = None

    def __init__(self, keys: KeyResolver) -> None:
        self.keys = keys

    def init(self) -> None:
        return None

    def close(self) -> None:
        return None

    def process(self, event: Event, ctx: Context[TaskState]) -> None:
        task_id = str(event.body.get("task_id", ""))
        if event.key != task_id:
            raise EventRejectedError(
                f"{event.subject} for task {task_id!r} was keyed {event.key!r}; key task "
                "events by the task id"
            )
        sender = event.envelope.sender
        event.message.verify(self.keys.public_key(sender))
        state = ctx.get(task_id)
        new = apply(
            state,
            event.subject,
            event.body,
            message_id=event.envelope.message_id,
            sender=sender,
            at_ms=event.envelope.created_at_ms,
        )
        if new is not state:
            ctx.put(task_id, new)

    def punctuate(self, ctx: PunctuationContext[TaskState]) -> None:
        return None

    def encode_state(self, state: TaskState) -> dict[str, Any]:
        return to_record(state)

    def decode_state(self, record: dict[str, Any]) -> TaskState:
        return from_record(record)
