"""The audit processor: source records -> ``mesh.audit.v1``, one hash chain per partition.

Source partition ``p`` of every audited topic is recorded in audit partition ``p`` (the mesh
creates all of them with one partition count, and the range assignor gives one instance the
same partition numbers of every topic), so exactly one instance extends each chain.

The bytes are recorded as they arrived, undecoded (the event's message is never opened): a
malformed record is evidence too.

The audit log is the processor's store, restored ``LAST``: a chain's head is the last record
of its audit partition, read by the runtime on every assignment (``read_committed``, which
waits out an open transaction of a previous owner). Links and the consumer offsets they
account for commit in one transaction, so a crash never forks or breaks a chain; a zombie's
late transaction is fenced by the group generation (KIP-447).

Only this processor extends a chain. Every link carries the mesh key's signature over its
``record_hash`` (``AuditRecord`` v2), and on restore :meth:`AuditProcessor.adopt` takes as the
head the newest link whose signature holds, walking back past anything else on the topic: a
link forged while the processor was down (whoever can write the topic can compute a
well-formed one) is reported, never extended and never sealed by a checkpoint, and the
processor's next link takes its place in the chain, which ``mesh audit verify`` then names.
A log written before v2 holds no signed link; its newest link is adopted once, as before.

Checkpoints: every ``checkpoint_every_ms``, each chain whose head moved gets its head signed
with the mesh's key, written to ``mesh.audit.checkpoints.v1`` in the same transaction. Which
heads were sealed is kept in memory: after a restart each chain's head is sealed once more,
a duplicate checkpoint of the same head that verification takes as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mesh.domain.audit.chain import (
    AUDIT_SUBJECT,
    CHECKPOINT_SUBJECT,
    Checkpoint,
    Link,
    checkpoint_bytes,
    next_link,
    signature_bytes,
    signature_problem,
)
from mesh.domain.identity import AgentKey
from mesh.domain.topics import (
    APPROVALS,
    AUDIT,
    AUDIT_CHECKPOINTS,
    CONTROL,
    DLQ,
    DRILLS,
    INBOX_PATTERN,
    KEYS,
    POLICIES,
    REGISTRY_EVENTS,
    TASKS,
    TELEMETRY,
    THROTTLES,
)
from processors.api import Adoption, Context, Event, PunctuationContext, Restore

__all__ = ["AUDITED", "AuditProcessor"]

#: The fixed topics the audit records; agent inboxes are added by pattern. Telemetry holds
#: every permit and every refusal on the sending side (with the policy's hash), the dead-letter
#: topic every refusal on the receiving side (with its reason and the original bytes), and the
#: policies topic which policy was in force when, the approvals topic who approved which call:
#: together, which rule (or person) decided what.
AUDITED = (
    REGISTRY_EVENTS,
    KEYS,
    POLICIES,
    APPROVALS,
    TASKS,
    TELEMETRY,
    CONTROL,
    THROTTLES,
    DRILLS,
    DLQ,
)


class AuditProcessor:
    name = "audit"
    inputs: tuple[str, ...] = AUDITED
    input_patterns: tuple[str, ...] = (INBOX_PATTERN,)
    store_topic = AUDIT
    store_subject = AUDIT_SUBJECT
    restore = Restore.LAST
    copartitioned: tuple[str, ...] = (AUDIT_CHECKPOINTS,)
    global_tables: tuple[str, ...] = ()

    def __init__(self, key: AgentKey, checkpoint_every_ms: int = 1_000) -> None:
        self.key = key
        self.punctuate_every_ms: int | None = checkpoint_every_ms
        self.sealed: dict[int, int] = {}  # audit partition -> last sequence checkpointed

    def init(self) -> None:
        self.sealed.clear()

    def close(self) -> None:
        return None

    def process(self, event: Event, ctx: Context[Link]) -> None:
        partition = event.partition
        link = next_link(
            ctx.head(),
            partition,
            event.log_topic,
            partition,
            event.offset,
            event.timestamp_ms,
            event.raw_key,
            event.value,
        )
        link = link._replace(signature=self.key.sign(signature_bytes(link)))
        ctx.put(f"{link.source_topic}:{partition}", link)

    def adopt(self, partition: int, newest_first: Iterator[tuple[int, Link]]) -> Adoption[Link]:
        """The chain's head after a restore: the newest link this processor signed (see the
        module docstring); what lies after it is named, so the runtime reports it."""
        public = self.key.public_bytes
        passed_over: list[str] = []
        legacy: tuple[int, Link] | None = None
        for offset, link in newest_first:
            problem = signature_problem(link, public)
            if problem is None:
                return Adoption(offset, link, passed_over)
            if problem == "unsigned" and legacy is None:
                legacy = (offset, link)
            passed_over.append(
                f"offset {offset}, sequence {link.sequence}: {problem}, so not written by the "
                "audit processor (tampering)"
            )
        if legacy is not None:  # a log written before links were signed
            return Adoption(legacy[0], legacy[1])
        return Adoption(passed_over=passed_over)

    def punctuate(self, ctx: PunctuationContext[Link]) -> None:
        for _, head in ctx.items():
            partition = head.audit_partition
            if self.sealed.get(partition) == head.sequence:
                continue
            checkpoint = self.checkpoint(head, ctx.now_ms)
            record = checkpoint.to_record()
            ctx.emit(AUDIT_CHECKPOINTS, str(partition), CHECKPOINT_SUBJECT, record, partition)
            self.sealed[partition] = head.sequence

    def checkpoint(self, head: Link, now_ms: int) -> Checkpoint:
        data = checkpoint_bytes(head.audit_partition, head.sequence, head.record_hash, now_ms)
        return Checkpoint(
            head.audit_partition, head.sequence, head.record_hash, now_ms, self.key.sign(data)
        )

    def encode_state(self, state: Link) -> dict[str, Any]:
        return state.to_record()

    def decode_state(self, record: dict[str, Any]) -> Link:
        return Link.from_record(record["source_partition"], record)
