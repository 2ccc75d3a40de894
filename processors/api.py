"""The processor contract: pure logic the runtime drives (Kafka Streams' ``Processor``).

A processor never touches a client. It is handed decoded events and a context through which it
reads and replaces keyed state (``ctx.get`` / ``ctx.put``), reads the runtime's global tables
(``ctx.agents``: the agent registry, read-only) and emits further records. State values are
frozen; a processor computes the next one with a pure ``apply(state, event)``.

The runtime (``processors.runtime``) owns the consumers, the transactional producer, commits,
restore, wall-clock punctuation and the dead-letter policy. The test driver
(``processors.testing``) runs the same processor with no broker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from mesh.adapters.serde.messages import OpenedMessage
from mesh.domain.agents import AgentState
from mesh.domain.envelope import Envelope

__all__ = ["Agents", "Context", "Event", "Processor", "PunctuationContext", "S"]

S = TypeVar("S")


class Event(NamedTuple):
    """One decoded input record. ``topic`` is the catalogue name, without the prefix."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    message: OpenedMessage

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

    def public_key(self, agent_id: str) -> bytes:
        """The key ``agent_id`` registered; raise UnknownSenderError if it has none."""
        ...


class Context(Protocol, Generic[S]):
    """What a processor may do while handling one event (all on the event's partition)."""

    @property
    def now_ms(self) -> int: ...

    @property
    def agents(self) -> Agents: ...

    def get(self, key: str) -> S | None: ...

    def put(self, key: str, state: S) -> None:
        """Replace the key's state; the runtime writes it to the store topic (the changelog)."""
        ...

    def emit(self, topic: str, key: str, subject: str, record: Mapping[str, Any]) -> None:
        """Produce a further record (same transaction as everything else of this event)."""
        ...


class PunctuationContext(Protocol, Generic[S]):
    """What a processor may do on a wall-clock tick: scan and replace state everywhere."""

    @property
    def now_ms(self) -> int: ...

    @property
    def agents(self) -> Agents: ...

    def items(self) -> Iterator[tuple[str, S]]: ...

    def put(self, key: str, state: S) -> None: ...


class Processor(Protocol, Generic[S]):
    """Pure logic with keyed state kept in ``store_topic`` (compacted, co-partitioned)."""

    name: str
    inputs: tuple[str, ...]
    #: Regexes of more input topics, matched after the topic prefix (agent inboxes: topics that
    #: appear as agents attach). They must be partitioned like ``inputs``, as the mesh's are.
    input_patterns: tuple[str, ...]
    store_topic: str
    store_subject: str
    punctuate_every_ms: int | None
    #: Global tables it reads through its context: ``("agents",)`` for ``ctx.agents``.
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
