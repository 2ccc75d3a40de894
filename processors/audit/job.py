"""The audit processor: source records -> ``mesh.audit.v1``, one hash chain per partition.

Source partition ``p`` of every audited topic is recorded in audit partition ``p`` (the mesh
creates all of them with one partition count, and the range assignor gives one instance the
same partition numbers of every topic), so exactly one instance extends each chain.

The bytes are recorded as they arrived, undecoded: a malformed record is evidence too.

Why a crash never forks or breaks a chain: links and the consumer offsets they account for
commit in one transaction, and on every assignment the head is re-read from the last committed
record of the audit partition (``read_committed``, which waits out an open transaction of a
previous owner). A zombie's late transaction is fenced by the group generation (KIP-447).

Checkpoints: every ``checkpoint_every_ms``, each chain whose head moved gets its head signed
with the mesh's key, written to ``mesh.audit.checkpoints.v1`` in the same transaction.
"""

from __future__ import annotations

import re

from confluent_kafka import Message

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.reading import last_record, reader
from mesh.adapters.serde.codec import Serde
from mesh.domain.audit.chain import (
    AUDIT_SUBJECT,
    CHECKPOINT_SUBJECT,
    Checkpoint,
    Link,
    checkpoint_bytes,
    next_link,
)
from mesh.domain.identity import AgentKey
from mesh.domain.topics import (
    AUDIT,
    AUDIT_CHECKPOINTS,
    CONTROL,
    INBOX_PATTERN,
    REGISTRY_EVENTS,
    TASKS,
    TELEMETRY,
)
from mesh.errors import ProcessorError
from mesh.settings import Settings
from processors.runtime.core import OutRecord, SourceRecord
from processors.runtime.job import Progress
from processors.runtime.tables import StaticTables, Tables

__all__ = ["AUDITED", "AuditJob"]

#: The fixed topics the audit records; agent inboxes are added by pattern.
AUDITED = (REGISTRY_EVENTS, TASKS, TELEMETRY, CONTROL)


class AuditJob:
    name = "audit"

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        serde: Serde,
        key: AgentKey,
        checkpoint_every_ms: int = 1_000,
    ) -> None:
        prefix = settings.topic_prefix
        self.settings = settings
        self.bootstrap = bootstrap
        self.serde = serde
        self.key = key
        self.tables: Tables = StaticTables()  # the audit reads no global table
        self.audit_topic = f"{prefix}{AUDIT}"
        self.checkpoint_topic = f"{prefix}{AUDIT_CHECKPOINTS}"
        fixed = tuple(f"{prefix}{topic}" for topic in AUDITED)
        self.subscription = (*fixed, f"^{re.escape(prefix)}{INBOX_PATTERN}")
        self.copartitioned = (*fixed, self.audit_topic, self.checkpoint_topic)
        self.punctuate_every_ms: int | None = checkpoint_every_ms
        self.heads: dict[int, Link] = {}
        self.sealed: dict[int, int] = {}
        self.audit_partitions: int | None = None

    def start(self) -> None:
        live = TopicAdmin(self.settings, self.bootstrap).topic_partitions()
        self.audit_partitions = live.get(self.audit_topic)

    def close(self) -> None:
        return None

    def handle(self, record: SourceRecord, now_ms: int) -> list[OutRecord]:
        partition = record.partition
        if self.audit_partitions is not None and partition >= self.audit_partitions:
            raise ProcessorError(
                f"{record.topic} has more partitions than {self.audit_topic} "
                f"({self.audit_partitions}); every audited topic must share its partition count"
            )
        link = next_link(
            self.heads.get(partition),
            partition,
            record.topic,
            partition,
            record.offset,
            record.timestamp_ms,
            record.key,
            record.value,
        )
        self.heads[partition] = link
        key = f"{record.topic}:{partition}".encode()
        value = self.serde.encode(AUDIT_SUBJECT, link.to_record())
        return [OutRecord(self.audit_topic, key, value, partition)]

    def punctuate(self, now_ms: int) -> list[OutRecord]:
        outputs = []
        for partition, head in self.heads.items():
            if self.sealed.get(partition) == head.sequence:
                continue
            checkpoint = self.checkpoint(head, now_ms)
            value = self.serde.encode(CHECKPOINT_SUBJECT, checkpoint.to_record())
            key = str(partition).encode()
            outputs.append(OutRecord(self.checkpoint_topic, key, value, partition))
            self.sealed[partition] = head.sequence
        return outputs

    def checkpoint(self, head: Link, now_ms: int) -> Checkpoint:
        data = checkpoint_bytes(head.audit_partition, head.sequence, head.record_hash, now_ms)
        return Checkpoint(
            head.audit_partition, head.sequence, head.record_hash, now_ms, self.key.sign(data)
        )

    def assigned(self, partitions: list[int], progress: Progress) -> int:
        """Re-read each assigned chain's head and last checkpoint from what committed."""
        consumer = reader(self.settings, self.bootstrap)
        try:
            for partition in partitions:
                self.heads.pop(partition, None)
                self.sealed.pop(partition, None)
                head = last_record(consumer, self.audit_topic, partition)
                if head is not None:
                    self.heads[partition] = Link.from_record(partition, self._decode(head))
                    progress(1)
                sealed = last_record(consumer, self.checkpoint_topic, partition)
                if sealed is not None:
                    self.sealed[partition] = Checkpoint.from_record(self._decode(sealed)).sequence
        finally:
            consumer.close()
        return len(partitions)

    def revoked(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.heads.pop(partition, None)
            self.sealed.pop(partition, None)

    def _decode(self, message: Message) -> dict[str, object]:
        value = message.value()
        if value is None:
            raise ProcessorError(f"{message.topic()}[{message.partition()}] ends in a tombstone")
        return self.serde.decode(value).record
