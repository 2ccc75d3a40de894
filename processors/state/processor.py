"""The state projections processor: ``mesh.tasks.v1`` + agent inboxes -> ``mesh.state.v1``.

Every task event and context write is signed by its sender; it is verified against the key the
registry holds for the sender (``ctx.agents``, the runtime's table of the registry), so a forged
write never reaches the shared context.

Messages between agents (their inboxes, keyed by task id like ``mesh.tasks.v1``) add their
sender and recipient to the task's participants: whoever took part in a task by talking about
it shows in its context, not only those named by task events. Most messages change nothing (both
ends are known already); those are neither verified nor written, so following the inboxes adds
a decode per message and no output. A message on no task is no task's business.
"""

from __future__ import annotations

from typing import Any

from mesh.domain.task_record import from_record, to_record
from mesh.domain.tasks import TaskState, apply, joined
from mesh.domain.topics import INBOX_PATTERN, STATE, TASKS
from mesh.errors import EventRejectedError
from processors.api import Context, Event, PunctuationContext, Restore

__all__ = ["StateProcessor"]


class StateProcessor:
    name = "state"
    inputs: tuple[str, ...] = (TASKS,)
    input_patterns: tuple[str, ...] = (INBOX_PATTERN,)
    store_topic = STATE
    global_tables: tuple[str, ...] = ("agents",)
    restore = Restore.TABLE
    copartitioned: tuple[str, ...] = ()
    store_subject = "mesh.state.TaskState"
    punctuate_every_ms: int | None = None

    def init(self) -> None:
        return None

    def close(self) -> None:
        return None

    def process(self, event: Event, ctx: Context[TaskState]) -> None:
        if event.topic != TASKS:
            self._message(event, ctx)
            return
        task_id = str(event.body.get("task_id", ""))
        if event.key != task_id:
            raise EventRejectedError(
                f"{event.subject} for task {task_id!r} was keyed {event.key!r}; key task "
                "events by the task id"
            )
        sender = event.envelope.sender
        event.message.verify(ctx.agents.public_key(sender))
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

    def _message(self, event: Event, ctx: Context[TaskState]) -> None:
        envelope = event.envelope
        task_id = envelope.task_id
        if task_id is None:
            return
        if event.key != task_id:
            raise EventRejectedError(
                f"message {envelope.message_id} on task {task_id!r} was keyed {event.key!r}; "
                "sidecars key messages by their task id"
            )
        state = ctx.get(task_id)
        new = joined(state, task_id, envelope.sender, envelope.recipient, envelope.created_at_ms)
        if new is state:
            return
        event.message.verify(ctx.agents.public_key(envelope.sender))
        ctx.put(task_id, new)

    def punctuate(self, ctx: PunctuationContext[TaskState]) -> None:
        return None

    def encode_state(self, state: TaskState) -> dict[str, Any]:
        return to_record(state)

    def decode_state(self, record: dict[str, Any]) -> TaskState:
        return from_record(record)
