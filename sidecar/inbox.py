"""The agent's inbox: verified, de-duplicated, delivered at least once.

Each record is decoded and its signature verified against the sender's registered key before
the agent sees it; whatever fails goes to the dead-letter topic with the reason and the
original bytes. A message id seen recently is a duplicate (a redelivery after a crash) and is
skipped. An offset becomes due for commit only once the agent has taken the message (or it
was dead-lettered or skipped) *and every earlier message of its partition*: a duplicate or a
dead letter behind a message the agent has not taken yet does not move the commit past it, so
a crash redelivers rather than loses.

While the agent is halted the inbox is paused (:meth:`Inbox.pause`): nothing is handed to the
agent, messages wait (in the queue, then, once it is full, in Kafka, uncommitted) and are
delivered in order after the resume.

No client here: the sidecar feeds records in (:meth:`Inbox.admit`) and commits what
:meth:`Inbox.due` returns, so this is unit-tested with no broker.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from mesh.adapters.serde.messages import MessageCodec, OpenedMessage
from mesh.domain.deadletter import SourceCoordinates
from mesh.domain.envelope import Envelope
from mesh.errors import IdentityError, SerdeError
from sidecar.delivery import Delivery
from sidecar.outbox import Outbox

__all__ = ["Counters", "Inbox", "Position", "Recent"]

RECENT_IDS = 4096


class Position(NamedTuple):
    topic: str
    partition: int


@dataclass
class Counters:
    sent: int = 0
    received: int = 0
    refused: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    spend_usd: float = 0.0
    untrusted_controls: int = 0  # control records ignored: not signed by a control signer
    stale_controls: int = 0  # signed commands that changed nothing (replayed, out of order)
    undecodable_agents: int = 0  # registry records that did not decode (logged, skipped)
    untrusted_keys: int = 0  # key statements ignored: forged, replayed or undecodable
    apply_failures: int = 0  # halt changes whose acknowledgement could not be produced
    commit_failures: int = 0  # inbox commits that failed on stop (those records redeliver)
    halt_latencies_ms: list[float] = field(default_factory=list)


class Recent:
    """The last ``size`` delivered message ids with their envelopes (oldest dropped first)."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self.size = size
        self._envelopes: OrderedDict[str, Envelope] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._envelopes

    def get(self, message_id: str) -> Envelope | None:
        return self._envelopes.get(message_id)

    def add(self, envelope: Envelope) -> None:
        self._envelopes[envelope.message_id] = envelope
        while len(self._envelopes) > self.size:
            self._envelopes.popitem(last=False)


class Inbox:
    def __init__(
        self,
        codec: MessageCodec,
        sender_key: Callable[[str], Awaitable[bytes]],
        outbox: Outbox,
        detected_by: str,
        counters: Counters,
        capacity: int = 1000,
    ) -> None:
        self.codec, self.sender_key, self.outbox = codec, sender_key, outbox
        self.detected_by, self.counters = detected_by, counters
        self.recent = Recent()
        self._queue: asyncio.Queue[tuple[Delivery, Position]] = asyncio.Queue(capacity)
        self._held: deque[tuple[Delivery, Position]] = deque()  # taken out while pausing
        self._open = asyncio.Event()
        self._open.set()
        self._pending: dict[Position, set[int]] = {}  # queued, not yet taken
        self._done: dict[Position, int] = {}  # past the last record handled
        self._committed: dict[Position, int] = {}

    async def admit(self, at: Position, offset: int, key: bytes | None, value: bytes) -> None:
        """Verify one inbox record and queue it for the agent, or dead-letter or skip it."""
        try:
            opened = self.codec.open(value, verify=False)
            opened.verify(await self.sender_key(opened.envelope.sender))
        except (SerdeError, IdentityError) as exc:
            self.counters.dead_lettered += 1
            source = SourceCoordinates(at.topic, at.partition, offset, key)
            await self.outbox.write(self.outbox.dead_letter(exc, value, source, self.detected_by))
            self._handled(at, offset)
            return
        if opened.envelope.message_id in self.recent:
            self.counters.duplicates += 1
            self._handled(at, offset)
            return
        await self._deliver(at, offset, opened)

    async def _deliver(self, at: Position, offset: int, opened: OpenedMessage) -> None:
        self.recent.add(opened.envelope)
        self.counters.received += 1
        delivery = Delivery(opened.envelope, opened.body_subject, opened.body, at.partition, offset)
        self._pending.setdefault(at, set()).add(offset)
        self._handled(at, offset)
        await self._queue.put((delivery, at))

    def _handled(self, at: Position, offset: int) -> None:
        self._done[at] = max(self._done.get(at, 0), offset + 1)

    def pause(self) -> None:
        """Hand nothing to the agent until :meth:`resume` (the agent is halted)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    async def receive(self, timeout_s: float | None = None) -> Delivery | None:
        """The next message (None on timeout, and while paused). Taking it makes its offset
        due for commit."""
        try:
            return await asyncio.wait_for(self._take(), timeout_s)
        except TimeoutError:
            return None

    async def _take(self) -> Delivery:
        while True:
            await self._open.wait()
            item = self._held.popleft() if self._held else await self._queue.get()
            if self.paused:  # paused while waiting: keep it, first in line
                self._held.appendleft(item)
                continue
            delivery, at = item
            self._pending.get(at, set()).discard(delivery.offset)
            return delivery

    def due(self) -> dict[Position, int]:
        """Offsets to commit per partition: up to the first message the agent has not taken,
        else past the last record handled."""
        due = {}
        for at, done in self._done.items():
            pending = self._pending.get(at)
            offset = min(pending) if pending else done
            if offset > self._committed.get(at, 0):
                due[at] = offset
        return due

    def committed(self, offsets: dict[Position, int]) -> None:
        self._committed.update(offsets)
