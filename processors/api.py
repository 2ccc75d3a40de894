"""The processor contract: pure logic the runtime drives (Kafka Streams' ``Processor``).

A processor never touches a client. It is handed events and a context through which it reads
and replaces keyed state (``ctx.get`` / ``ctx.put``), reads the runtime's global tables
(``ctx.agents``: the agent registry, read-only) and emits further records. State values are
frozen; a processor computes the next one with a pure ``apply(state, event)``.

Where its state comes back from after a restart or a rebalance is declared, not coded
(:class:`Restore`), and the runtime does the reading:

* ``TABLE``: ``store_topic`` is the processor's compacted changelog; every ``put`` writes it,
  and every record of the assigned partitions is folded back by key (registry, state).
* ``SOURCE``: ``store_topic`` is one of the inputs, and its own changelog (Kafka Streams'
  source-topic reuse): ``put`` changes memory only, and the assigned partitions are replayed
  through ``process()`` from their beginning, outputs discarded (the kill-switch's halts in
  force, from ``mesh.control.v2``). A SOURCE processor may also declare
  ``replay_lookback_ms`` ({input topic: ms}): the last that many milliseconds of those inputs,
  up to the group's committed offsets, are replayed too, merged with the store topic in time
  order (the kill-switch's sliding windows, from an hour of telemetry), and its optional
  ``restored()`` is called once the replay is done.
* ``LAST``: ``store_topic`` is a log the processor appends to with ``put``; each partition's
  state is its last record, ``ctx.head()`` (the audit chain's head). Others may be able to
  write that log too, so a LAST processor may say which record it adopts: ``adopt`` is handed
  the partition's records newest first and returns an :class:`Adoption` (by default the
  newest record that decodes is the head).

The runtime (``processors.runtime``) owns the consumers, the transactional producer, commits,
restore, wall-clock punctuation and the dead-letter policy. The test driver
(``processors.testing``) runs the same processor with no broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from mesh.adapters.serde.messages import OpenedMessage
from mesh.domain.agents import AgentState
from mesh.domain.envelope import Envelope
from mesh.domain.keys import KeyStatement

__all__ = [
    "Adoption",
    "Agents",
    "Context",
    "Event",
    "Halts",
    "Processor",
    "PunctuationContext",
    "Restore",
    "S",
]

S = TypeVar("S")


class Restore(StrEnum):
    TABLE = "table"
    SOURCE = "source"
    LAST = "last"


@dataclass
class Adoption(Generic[S]):
    """LAST: the record a processor adopts as a partition's head, and why it passed over the
    newer ones (reported by the runtime as tampering)."""

    offset: int | None = None
    head: S | None = None
    passed_over: list[str] = field(default_factory=list)


class _Opener(Protocol):
    def open(self, value: bytes, *, verify: bool = ...) -> OpenedMessage: ...


class Event:
    """One input record. ``topic`` is the catalogue name, without the prefix (``log_topic``
    the full name); ``key`` the key as text (``raw_key`` as bytes); ``value`` the original
    bytes. The message is decoded on first use, so a processor that records bytes as
    they came (the audit) never decodes, and one that does gets a SerdeError for bad bytes
    (which dead-letters the record)."""

    __slots__ = (
        "_message",
        "_opener",
        "key",
        "log_topic",
        "offset",
        "partition",
        "raw_key",
        "timestamp_ms",
        "topic",
        "value",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        raw_key: bytes | None,
        value: bytes | None,
        opener: _Opener,
        log_topic: str | None = None,
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.timestamp_ms, self.raw_key, self.value = timestamp_ms, raw_key, value
        self.key = raw_key.decode(errors="replace") if raw_key is not None else None
        self.log_topic = log_topic or topic
        self._opener = opener
        self._message: OpenedMessage | None = None

    @property
    def message(self) -> OpenedMessage:
        if self._message is None:
            self._message = self._opener.open(self.value or b"", verify=False)
        return self._message

    @property
    def decoded(self) -> OpenedMessage | None:
        """The message, if the processor decoded it (None: it never looked inside)."""
        return self._message

    @property
    def envelope(self) -> Envelope:
        return self.message.envelope

    @property
    def subject(self) -> str:
        return self.message.body_subject

    @property
    def body(self) -> dict[str, Any]:
        return self.message.body


class Agents(Protocol):
    """The agent registry as a read-only global table, kept current by the runtime (a
    ``Mapping`` of agent id to record, plus the key lookup)."""

    def __getitem__(self, agent_id: str) -> AgentState: ...

    def __iter__(self) -> Iterator[str]: ...

    def __len__(self) -> int: ...

    def __contains__(self, agent_id: object) -> bool: ...

    def get(self, agent_id: str) -> AgentState | None: ...

    def vouched(self, agent_id: str) -> KeyStatement | None:
        """The key statement in force for ``agent_id`` (``mesh.keys.v1``), if any."""
        ...

    def public_key(self, agent_id: str) -> bytes:
        """The key ``agent_id`` registered; raise UnknownSenderError if it has none."""
        ...


class Halts(Protocol):
    """The halts in force as a read-only global table, kept current by the runtime."""

    def halt_for(self, agent_id: str, capabilities: Iterable[str] = ()) -> dict[str, Any] | None:
        """The halt that stops ``agent_id`` (None: none does)."""
        ...


class _Outputs(Protocol, Generic[S]):
    """What a processor may do in any transaction: read the tables and state, replace state,
    emit further records (same transaction as the rest)."""

    @property
    def now_ms(self) -> int: ...

    @property
    def agents(self) -> Agents: ...

    def items(self) -> Iterator[tuple[str, S]]:
        """Every key's state on every partition this instance holds (LAST: every partition's
        head, keyed by the partition number)."""
        ...

    def put(self, key: str, state: S) -> None:
        """Replace the key's state (TABLE: also written to the changelog; LAST: appended to
        the store log with record key ``key``, and the partition's head)."""
        ...

    def emit(
        self,
        topic: str,
        key: str,
        subject: str,
        record: Mapping[str, Any],
        partition: int | None = None,
    ) -> None:
        """Produce a further record, encoded with ``subject``."""
        ...

    def emit_raw(self, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        """Produce bytes already framed (a signed envelope)."""
        ...


class Context(_Outputs[S], Protocol):
    """What a processor may do while handling one event (state on the event's partition)."""

    @property
    def halts(self) -> Halts: ...

    def get(self, key: str) -> S | None: ...

    def delete(self, key: str) -> None:
        """Drop the key's state (TABLE: a tombstone in the changelog)."""
        ...

    def head(self) -> S | None:
        """LAST: the partition's last state (None before its first record)."""
        ...


class PunctuationContext(_Outputs[S], Protocol):
    """What a processor may do on a wall-clock tick: scan and replace state everywhere."""

    def delete(self, key: str) -> None:
        """Drop the key's state on every partition it is held (TABLE: tombstones)."""
        ...


class Processor(Protocol, Generic[S]):
    """Pure logic with keyed state restored as ``restore`` says, from ``store_topic``."""

    name: str
    inputs: tuple[str, ...]
    #: Regexes of more input topics, matched after the topic prefix (agent inboxes: topics that
    #: appear as agents attach). They must be partitioned like ``inputs``, as the mesh's are.
    input_patterns: tuple[str, ...]
    store_topic: str
    store_subject: str
    restore: Restore
    #: More topics that must share the inputs' partition count (outputs written by partition).
    copartitioned: tuple[str, ...]
    punctuate_every_ms: int | None
    #: Global tables it reads through its context: ``"agents"`` (``ctx.agents``, with the key
    #: directory), ``"keys"`` (the key directory alone, through ``ctx.agents``) and ``"halts"``
    #: (``ctx.halts``).
    global_tables: tuple[str, ...]

    def init(self) -> None: ...

    def process(self, event: Event, ctx: Context[S]) -> None:
        """Handle one event. Raise an EventRejectedError (or a SerdeError/IdentityError) to
        dead-letter it with the reason; any other exception is a bug and stops the processor."""
        ...

    def punctuate(self, ctx: PunctuationContext[S]) -> None: ...

    def close(self) -> None: ...

    def encode_state(self, state: S) -> dict[str, Any]: ...

    def decode_state(self, record: dict[str, Any]) -> S: ...
