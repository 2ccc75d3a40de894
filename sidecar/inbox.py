"""The agent's inbox: verified, de-duplicated, delivered at least once, acknowledged.

Each record is decoded and its signature verified against the sender's key (as the mesh
countersigned it) before the agent sees it; whatever fails goes to the dead-letter topic with
the reason and the original bytes. A message id seen recently is a duplicate (a redelivery
after a crash) and is skipped.

Delivery is at least once, with an explicit acknowledgement. A message the agent takes stays
outstanding until it is acknowledged (:meth:`Inbox.ack`; the SDK acknowledges when its handler
returns, ``receive(auto_ack=True)`` at once). An outstanding message is delivered again when
the agent gives it back (:meth:`Inbox.nack`), when it was not acknowledged within
``ack_timeout_s`` (the agent died holding it), and when the agent is resumed after a halt (the
halt stopped it mid-work). An offset becomes due for commit only once its message is
acknowledged (or it was dead-lettered or skipped) *and every earlier message of its
partition*, so a crash of the sidecar redelivers rather than loses.

While the agent is halted the inbox is paused (:meth:`Inbox.pause`): nothing is handed to the
agent, messages wait (in the queue, then, once it is full, in Kafka, uncommitted) and are
delivered in order after the resume.

Before delivery, each verified message passes the sidecar's ``admission`` check (what the
receiving side enforces whatever the sender's sidecar did: the sender's operator policy allows
this recipient; the message is not a replay, by the broker's append time); a refusal is
dead-lettered like a bad signature.

No client here: the sidecar feeds records in (:meth:`Inbox.admit`) and commits what
:meth:`Inbox.due` returns, so this is unit-tested with no broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mesh.adapters.serde.messages import MessageCodec, OpenedMessage
from mesh.domain.deadletter import SourceCoordinates
from mesh.domain.envelope import Envelope
from mesh.errors import AgentRefusedError, IdentityError, SerdeError
from sidecar.delivery import Delivery
from sidecar.outbox import Outbox

__all__ = ["Counters", "Inbox", "Position", "Recent"]

RECENT_IDS = 4096
#: Raise (an IdentityError or AgentRefusedError) to refuse a verified message: (its envelope,
#: the broker's append time if known).
#: The receiving side's own checks of a verified message: its envelope, the broker's append
#: time, its body's subject and the body (raises AgentRefusedError to dead-letter it).
Admission = Callable[[Envelope, int | None, str, Mapping[str, Any]], None]


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
    untrusted_policies: int = 0  # policy records ignored: not an operator's, replayed, junk
    redelivered: int = 0  # messages handed to the agent again (given back, timed out, resumed)
    apply_failures: int = 0  # halt changes whose acknowledgement could not be produced
    commit_failures: int = 0  # inbox commits that failed on stop (those records redeliver)
    halt_latencies_ms: list[float] = field(default_factory=list)
    refused_by_rule: dict[str, int] = field(default_factory=dict)  # the policy's rule -> count
    dead_lettered_by_reason: dict[str, int] = field(default_factory=dict)


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
        ack_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        admission: Admission | None = None,
    ) -> None:
        self.codec, self.sender_key, self.outbox = codec, sender_key, outbox
        self.admission = admission
        self.detected_by, self.counters = detected_by, counters
        self.ack_timeout_s, self.clock = ack_timeout_s, clock
        self.recent = Recent()
        #: Taken, not yet acknowledged: message id -> (delivery, where, redeliver after).
        self._outstanding: dict[str, tuple[Delivery, Position, float]] = {}
        self._queue: asyncio.Queue[tuple[Delivery, Position]] = asyncio.Queue(capacity)
        self._held: deque[tuple[Delivery, Position]] = deque()  # taken out while pausing
        self._open = asyncio.Event()
        self._open.set()
        self._pending: dict[Position, set[int]] = {}  # queued or outstanding: not acknowledged
        self._done: dict[Position, int] = {}  # past the last record handled
        self._committed: dict[Position, int] = {}

    async def admit(
        self,
        at: Position,
        offset: int,
        key: bytes | None,
        value: bytes,
        appended_ms: int | None = None,
    ) -> None:
        """Verify one inbox record and queue it for the agent, or dead-letter or skip it.
        ``appended_ms``: the broker's append time of the record, when the topic keeps one."""
        try:
            opened = self.codec.open(value, verify=False)
            opened.verify(await self.sender_key(opened.envelope.sender))
            if self.admission is not None:
                self.admission(opened.envelope, appended_ms, opened.body_subject, opened.body)
        except (SerdeError, IdentityError, AgentRefusedError) as exc:
            source = SourceCoordinates(at.topic, at.partition, offset, key)
            await self.outbox.write(self.outbox.dead_letter(exc, value, source, self.detected_by))
            self.counters.dead_lettered += 1  # counted once written (a stop mid-write redelivers)
            reasons = self.counters.dead_lettered_by_reason
            reasons[exc.code] = reasons.get(exc.code, 0) + 1
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
        """Deliver again, first what the agent held unacknowledged when it was halted."""
        for message_id in list(self._outstanding):
            self.nack(message_id)
        self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    async def receive(
        self, timeout_s: float | None = None, *, auto_ack: bool = False
    ) -> Delivery | None:
        """The next message (None on timeout, and while paused). It stays outstanding until
        :meth:`ack` (``auto_ack``: acknowledged as it is taken)."""
        try:
            delivery = await asyncio.wait_for(self._take(), timeout_s)
        except TimeoutError:
            return None
        if auto_ack:
            self.ack(delivery.message_id)
        return delivery

    def ack(self, message_id: str) -> bool:
        """The agent is done with the message: its offset may be committed. False if it is not
        outstanding (acknowledged already, or given out again and acknowledged there)."""
        held = self._outstanding.pop(message_id, None)
        if held is None:
            return False
        delivery, at, _ = held
        self._pending.get(at, set()).discard(delivery.offset)
        return True

    def nack(self, message_id: str) -> bool:
        """The agent gives the message back: it is delivered again, first in line."""
        held = self._outstanding.pop(message_id, None)
        if held is None:
            return False
        delivery, at, _ = held
        self._held.appendleft((delivery, at))
        self.counters.redelivered += 1
        return True

    async def _take(self) -> Delivery:
        while True:
            await self._open.wait()
            self._expire()
            if self._held:
                item = self._held.popleft()
            else:
                try:
                    item = await asyncio.wait_for(self._queue.get(), self._until_expiry())
                except TimeoutError:
                    continue  # an outstanding message timed out: deliver it again
            if self.paused:  # paused while waiting: keep it, first in line
                self._held.appendleft(item)
                continue
            delivery, at = item
            deadline = self.clock() + self.ack_timeout_s
            self._outstanding[delivery.message_id] = (delivery, at, deadline)
            return delivery

    def _expire(self) -> None:
        now = self.clock()
        for message_id, (_, _, deadline) in list(self._outstanding.items()):
            if deadline <= now:
                self.nack(message_id)

    def _until_expiry(self) -> float | None:
        if not self._outstanding:
            return None
        first = min(deadline for _, _, deadline in self._outstanding.values())
        return max(0.0, first - self.clock()) + 0.001

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
