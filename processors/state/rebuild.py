"""Rebuild one task's state from the log, as it was at a point in time (time travel)."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.partitioning import partition_for
from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import KeyResolver
from mesh.domain.tasks import TaskState, apply
from mesh.domain.topics import TASKS
from mesh.errors import MeshError
from mesh.settings import Settings

__all__ = ["rebuild_task"]


def rebuild_task(
    settings: Settings,
    bootstrap: str,
    codec: MessageCodec,
    keys: KeyResolver,
    task_id: str,
    as_of_ms: int | None = None,
) -> tuple[TaskState | None, int]:
    """Fold the task's events appended up to ``as_of_ms`` (log time); returns (state, skipped).

    Events are checked exactly as the processor checks them (signature against the registered
    key, version checks), so the result matches what the projection held at that time.
    """
    topic = f"{settings.topic_prefix}{TASKS}"
    consumer = reader(settings, bootstrap)
    partitions = len(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
    assigned = [
        TopicPartition(topic, partition_for(task_id.encode(), partitions), OFFSET_BEGINNING)
    ]
    consumer.assign(assigned)
    state: TaskState | None = None
    skipped = 0

    def fold(message: Message) -> None:
        nonlocal state, skipped
        if message.key() != task_id.encode():
            return
        if as_of_ms is not None and message.timestamp()[1] > as_of_ms:
            return
        try:
            opened = codec.open(message.value() or b"", verify=False)
            opened.verify(keys.public_key(opened.envelope.sender))
            state = apply(
                state,
                opened.body_subject,
                opened.body,
                message_id=opened.envelope.message_id,
                sender=opened.envelope.sender,
                at_ms=opened.envelope.created_at_ms,
            )
        except MeshError:
            skipped += 1  # refused by the processor too (it went to the dead-letter topic)

    try:
        read_to_end(consumer, assigned, fold)
    finally:
        consumer.close()
    return state, skipped
