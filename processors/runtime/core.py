"""The part of the runtime that is the same with and without a broker.

:class:`Core` turns one source record into the output records of its transaction: it decodes,
hands the event to the processor, applies ``put``-s to the keyed store, and turns refusals into
dead letters. The engine wraps it in Kafka transactions; the test driver calls it directly.

Idempotent by construction: every store record carries the source coordinates it came from
(header ``mesh-source``), the store remembers the last applied offset per source partition, and
a record at or below it is a no-op. Exactly-once transactions already prevent reprocessing;
this makes a replay after a lost commit harmless too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple

from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.deadletter import SourceCoordinates, dead_letter_value
from mesh.domain.topics import DLQ
from mesh.errors import EventRejectedError, IdentityError, SerdeError, TableBehindError
from processors.api import Event, Processor, S
from processors.runtime.tables import AgentsView, StaticTables, Tables

__all__ = ["Core", "OutRecord", "SourceRecord", "Store"]

SOURCE_HEADER = "mesh-source"
#: What a processor may refuse without stopping: bad bytes, bad identity, domain refusals.
REFUSALS = (SerdeError, IdentityError, EventRejectedError)


class SourceRecord(NamedTuple):
    topic: str  # the full (prefixed) name
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class OutRecord(NamedTuple):
    topic: str  # the full (prefixed) name
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: by key (murmur2)
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Store(Generic[S]):
    """Keyed state per partition, plus the last applied source offset per source partition."""

    partitions: dict[int, dict[str, S]] = field(default_factory=dict)
    applied: dict[tuple[str, int], int] = field(default_factory=dict)

    def drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)
            for source in [s for s in self.applied if s[1] == partition]:
                del self.applied[source]

    def note_applied(self, source: bytes) -> None:
        topic, partition, offset = source.decode().rsplit(":", 2)
        key = (topic, int(partition))
        self.applied[key] = max(self.applied.get(key, -1), int(offset))


class Core(Generic[S]):
    """Decode, process, store, dead-letter: one record or one tick at a time."""

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
        self.store_topic = f"{prefix}{processor.store_topic}"
        self.punctuate_every_ms = processor.punctuate_every_ms
        self.dead_letters = 0

    # -- records ---------------------------------------------------------------------------

    def handle(self, record: SourceRecord, now_ms: int) -> list[OutRecord]:
        """The outputs of one source record (empty for a record already applied)."""
        source = (record.topic, record.partition)
        if record.offset <= self.store.applied.get(source, -1):
            return []
        self.store.partitions.setdefault(record.partition, {})
        context = _EventContext(self, record, now_ms, self.tables.view())
        try:
            event = self._event(record)
            try:
                self.processor.process(event, context)
            except TableBehindError:  # see processors.runtime.tables
                self.tables.catch_up()
                context = _EventContext(self, record, now_ms, self.tables.view(False))
                self.processor.process(event, context)
        except REFUSALS as exc:
            return [self._dead_letter(record, exc)]
        return context.outputs

    def punctuate(self, now_ms: int) -> list[OutRecord]:
        context = _TickContext(self, now_ms)
        self.processor.punctuate(context)
        return context.outputs

    def restore(
        self, partition: int, key: bytes | None, value: bytes | None, source: bytes | None
    ) -> None:
        """Fold one store-topic record into the store (restore on start and rebalance)."""
        states = self.store.partitions.setdefault(partition, {})
        if source is not None:
            self.store.note_applied(source)
        if key is None:
            return
        if value is None:
            states.pop(key.decode(), None)
            return
        states[key.decode()] = self.processor.decode_state(self.serde.decode(value).record)

    # -- helpers ---------------------------------------------------------------------------

    def _event(self, record: SourceRecord) -> Event:
        message = self.codec.open(record.value or b"", verify=False)
        return Event(
            topic=record.topic.removeprefix(self.prefix),
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            key=record.key.decode(errors="replace") if record.key is not None else None,
            message=message,
        )

    def _dead_letter(
        self, record: SourceRecord, error: SerdeError | IdentityError | EventRejectedError
    ) -> OutRecord:
        coordinates = SourceCoordinates(record.topic, record.partition, record.offset, record.key)
        value = dead_letter_value(
            self.serde, error, record.value or b"", self.detected_by, coordinates
        )
        self.dead_letters += 1
        return OutRecord(f"{self.prefix}{DLQ}", record.key, value)

    def state_record(self, partition: int, key: str, state: S, source: bytes | None) -> OutRecord:
        self.store.partitions.setdefault(partition, {})[key] = state
        value = self.serde.encode(self.processor.store_subject, self.processor.encode_state(state))
        headers = ((SOURCE_HEADER, source),) if source is not None else ()
        return OutRecord(self.store_topic, key.encode(), value, partition, headers)


class _EventContext(Generic[S]):
    def __init__(
        self, core: Core[S], record: SourceRecord, now_ms: int, agents: AgentsView
    ) -> None:
        self._core = core
        self.agents = agents
        self._record = record
        self._states = core.store.partitions[record.partition]
        self._source = f"{record.topic}:{record.partition}:{record.offset}".encode()
        self._now_ms = now_ms
        self.outputs: list[OutRecord] = []

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def get(self, key: str) -> S | None:
        return self._states.get(key)

    def put(self, key: str, state: S) -> None:
        record = self._core.state_record(self._record.partition, key, state, self._source)
        self.outputs.append(record)

    def emit(self, topic: str, key: str, subject: str, record: Mapping[str, Any]) -> None:
        value = self._core.serde.encode(subject, record)
        self.outputs.append(OutRecord(f"{self._core.prefix}{topic}", key.encode(), value))


class _TickContext(Generic[S]):
    def __init__(self, core: Core[S], now_ms: int) -> None:
        self._core = core
        self.agents = core.tables.view(False)
        self._now_ms = now_ms
        self._partition_of = {
            key: partition for partition, states in core.store.partitions.items() for key in states
        }
        self.outputs: list[OutRecord] = []

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def items(self) -> Iterator[tuple[str, S]]:
        for states in list(self._core.store.partitions.values()):
            yield from list(states.items())

    def put(self, key: str, state: S) -> None:
        self.outputs.append(self._core.state_record(self._partition_of[key], key, state, None))
