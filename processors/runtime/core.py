"""The part of the runtime that is the same with and without a broker.

:class:`Core` turns one source record into the output records of its transaction: it hands
the event to the processor, applies its ``put``-s to the store, and turns refusals into dead
letters. It also folds back what the engine reads on a restore, whichever way the processor
declared (:class:`~processors.api.Restore`). The engine wraps it in Kafka transactions; the
test driver calls it directly.

Changelog writes are coalesced per transaction (Kafka Streams' record cache): a TABLE
processor's ``put``-s mark a key dirty, and :meth:`Core.flush` encodes each dirty key's final
state once, when the engine commits. An agent that heartbeats five times in one batch costs one
store record, not five; readers of the compacted topic only ever needed the last.

Idempotent by construction: every store record carries the source coordinates it came from
(header ``mesh-source``), the store remembers the last applied offset per source partition, and
a record at or below it is a no-op. Exactly-once transactions already prevent reprocessing;
this makes a replay after a lost commit harmless too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic

from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.adapters.tracing import SpanKind, record_span
from mesh.domain.deadletter import SourceCoordinates, dead_letter_value
from mesh.domain.topics import DLQ
from mesh.errors import (
    EventRejectedError,
    IdentityError,
    MeshError,
    ProcessorError,
    SerdeError,
    TableBehindError,
)
from processors.api import Adoption, Event, Processor, Restore, S
from processors.runtime.contexts import EventContext, ReplayContext, TickContext
from processors.runtime.records import OutRecord, SourceRecord
from processors.runtime.tables import StaticTables, Tables

__all__ = [
    "REFUSALS",
    "SOURCE_HEADER",
    "Core",
    "OutRecord",
    "SourceRecord",
    "Store",
    "StoredRecord",
]

SOURCE_HEADER = "mesh-source"
#: What a processor may refuse without stopping: bad bytes, bad identity, domain refusals.
REFUSALS = (SerdeError, IdentityError, EventRejectedError)
_log = logging.getLogger("mesh.processors")


@dataclass
class Store(Generic[S]):
    """Keyed state per partition (TABLE, SOURCE), each partition's head (LAST), and the last
    applied source offset per source partition."""

    partitions: dict[int, dict[str, S]] = field(default_factory=dict)
    heads: dict[int, S] = field(default_factory=dict)
    applied: dict[tuple[str, int], int] = field(default_factory=dict)

    def drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)
            self.heads.pop(partition, None)
            for source in [s for s in self.applied if s[1] == partition]:
                del self.applied[source]

    def note_applied(self, source: bytes) -> None:
        topic, partition, offset = source.decode().rsplit(":", 2)
        key = (topic, int(partition))
        self.applied[key] = max(self.applied.get(key, -1), int(offset))


#: One record of a LAST store as read back: offset, value, the ``mesh-source`` header.
StoredRecord = tuple[int, bytes | None, bytes | None]


class Core(Generic[S]):
    """Process, store, dead-letter: one record or one tick at a time."""

    def __init__(
        self,
        processor: Processor[S],
        codec: MessageCodec,
        prefix: str,
        detected_by: str,
        tables: Tables | None = None,
    ) -> None:
        self.processor = processor
        self.tables = tables or StaticTables()
        self.codec = codec
        self.serde: Serde = codec.serde
        self.prefix = prefix
        self.detected_by = detected_by
        self.store: Store[S] = Store()
        self.store_topic = self.topic(processor.store_topic)
        self.punctuate_every_ms = processor.punctuate_every_ms
        #: The store topic's partition count, once the engine knows it: a record from a
        #: partition beyond it breaks co-partitioning (checked, never silently mis-stored).
        self.store_partitions: int | None = None
        self.dead_letters = 0
        self.dead_letters_by_reason: dict[str, int] = {}
        self.replay_refusals = 0
        #: TABLE keys changed since the last flush: (partition, key) -> (state, source).
        self.dirty: dict[tuple[int, str], tuple[S | None, bytes | None]] = {}

    # -- records ---------------------------------------------------------------------------

    def handle(self, record: SourceRecord, now_ms: int) -> list[OutRecord]:
        """The outputs of one source record (empty for a record already applied)."""
        if record.offset <= self.store.applied.get((record.topic, record.partition), -1):
            return []
        self._check_partition(record)
        self.store.partitions.setdefault(record.partition, {})
        event = self.event(record)
        context = EventContext(self, record, now_ms, self.tables.view())
        started_ns = time.time_ns()
        try:
            try:
                self.processor.process(event, context)
            except TableBehindError:  # see processors.runtime.tables
                self.tables.catch_up()
                context = EventContext(self, record, now_ms, self.tables.view(False))
                self.processor.process(event, context)
        except REFUSALS as exc:
            self._traced(event, started_ns, exc.code)
            return [self._dead_letter(record, exc)]
        self._traced(event, started_ns)
        return context.outputs

    def _traced(self, event: Event, started_ns: int, refused: str | None = None) -> None:
        """A span for the work on a message the processor decoded (its trace continues),
        refused or not."""
        opened = event.decoded
        if opened is not None and opened.envelope.traceparent:
            name = f"process {self.processor.name}"
            attributes = {} if refused is None else {"mesh.refused": refused}
            record_span(
                name, SpanKind.CONSUMER, opened.envelope.traceparent, started_ns, attributes
            )

    def punctuate(self, now_ms: int) -> list[OutRecord]:
        context = TickContext(self, now_ms)
        self.processor.punctuate(context)
        return context.outputs

    def flush(self) -> list[OutRecord]:
        """The changelog records of every key changed since the last flush (TABLE)."""
        outputs = [
            self.state_record(partition, key, state, source)
            for (partition, key), (state, source) in self.dirty.items()
        ]
        self.dirty.clear()
        return outputs

    def discard(self) -> None:
        """Forget unflushed changes (their batch will not commit; the store is restored)."""
        self.dirty.clear()

    # -- restore (the engine reads; see processors.api.Restore) ----------------------------

    def restore(
        self, partition: int, key: bytes | None, value: bytes | None, source: bytes | None
    ) -> None:
        """Fold one record of the store topic back (TABLE: by key; LAST: the head)."""
        if source is not None:
            self.store.note_applied(source)
        if self.processor.restore is Restore.LAST:
            if value is not None:
                self.store.heads[partition] = self._decode_state(value)
            return
        states = self.store.partitions.setdefault(partition, {})
        if key is None:
            return
        if value is None:
            states.pop(key.decode(), None)
            return
        try:
            states[key.decode()] = self._decode_state(value)
        except (MeshError, KeyError, TypeError) as exc:  # junk or a forgery: not restored
            _log.warning("%s[%d]: skipped a store record: %s", self.store_topic, partition, exc)

    def adopt_head(self, partition: int, newest_first: Iterable[StoredRecord]) -> list[str]:
        """LAST: make the record the processor adopts (see :class:`~processors.api.Adoption`)
        the partition's head; returns why newer records were passed over. A record that does
        not decode is passed over too: junk on the store topic must not stop a restore."""
        notes: list[str] = []
        sources: dict[int, bytes | None] = {}

        def candidates() -> Iterator[tuple[int, S]]:
            for offset, value, source in newest_first:
                if value is None:
                    notes.append(f"offset {offset}: a tombstone")
                    continue
                try:
                    state = self._decode_state(value)
                except (MeshError, KeyError, TypeError) as exc:
                    notes.append(f"offset {offset}: not a {self.processor.store_subject} ({exc})")
                    continue
                sources[offset] = source
                yield offset, state

        choose: Any = getattr(self.processor, "adopt", _newest)
        adoption: Adoption[S] = choose(partition, candidates())
        if adoption.offset is not None and adoption.head is not None:
            self.store.heads[partition] = adoption.head
            source = sources.get(adoption.offset)
            if source is not None:
                self.store.note_applied(source)
        return notes + adoption.passed_over

    def replay(self, record: SourceRecord, now_ms: int) -> None:
        """SOURCE: fold one record of the store topic through ``process()``, outputs
        discarded. A refusal was dead-lettered when the record was first consumed; it is
        counted here, not dead-lettered again."""
        self.store.partitions.setdefault(record.partition, {})
        context = ReplayContext(self, record, now_ms, self.tables.view(False))
        try:
            self.processor.process(self.event(record), context)
        except REFUSALS:
            self.replay_refusals += 1

    # -- helpers ---------------------------------------------------------------------------

    def topic(self, name: str) -> str:
        """The full name of catalogue topic ``name`` (the prefix is the cluster's)."""
        return f"{self.prefix}{name}"

    def event(self, record: SourceRecord) -> Event:
        return Event(
            topic=record.topic.removeprefix(self.prefix),
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            raw_key=record.key,
            value=record.value,
            opener=self.codec,
            log_topic=record.topic,
        )

    def state_record(
        self, partition: int, key: str, state: S | None, source: bytes | None
    ) -> OutRecord:
        """The store record of ``key`` on ``partition`` (None: a tombstone)."""
        value = None
        if state is not None:
            encoded = self.processor.encode_state(state)
            value = self.serde.encode(self.processor.store_subject, encoded)
        headers = ((SOURCE_HEADER, source),) if source is not None else ()
        return OutRecord(self.store_topic, key.encode(), value, partition, headers)

    def _decode_state(self, value: bytes) -> S:
        return self.processor.decode_state(self.serde.decode(value).record)

    def _check_partition(self, record: SourceRecord) -> None:
        if self.store_partitions is not None and record.partition >= self.store_partitions:
            raise ProcessorError(
                f"{record.topic} has more partitions than {self.store_topic} "
                f"({self.store_partitions}); every input must share the store's partition "
                "count. Recreate the topic with MESH_PARTITIONS partitions"
            )

    def _dead_letter(
        self, record: SourceRecord, error: SerdeError | IdentityError | EventRejectedError
    ) -> OutRecord:
        coordinates = SourceCoordinates(record.topic, record.partition, record.offset, record.key)
        value = dead_letter_value(
            self.serde, error, record.value or b"", self.detected_by, coordinates
        )
        self.dead_letters += 1
        self.dead_letters_by_reason[error.code] = self.dead_letters_by_reason.get(error.code, 0) + 1
        return OutRecord(self.topic(DLQ), record.key, value)


def _newest(partition: int, candidates: Iterator[tuple[int, S]]) -> Adoption[S]:
    """The default adoption: the newest record that decodes."""
    for offset, state in candidates:
        return Adoption(offset, state)
    return Adoption()
