"""What leaves the sidecar: every record sealed with the agent's key, then written and awaited.

:class:`Outbox` seals (events, telemetry, dead letters) and writes through a :class:`Sink`, the
port to Kafka: :class:`KafkaSink` on aiokafka in production, :class:`MemorySink` in unit tests.
Writing awaits every delivery, so a call that returns was written and a call that raises wrote
nothing it reports as written. Client errors are translated here into KafkaUnavailableError.
No wait is unbounded: a producer that does not acknowledge within :data:`ACK_TIMEOUT_S` is
replaced and the records are written again (see :class:`KafkaSink`).

:meth:`Outbox.write_soon` hands a record to the producer without waiting for the broker (a tool
permit's record: the call it authorizes must not wait a round trip for its audit trail). Its
delivery is awaited by the next :meth:`Outbox.write`, which raises if it failed; the producer
is idempotent and keeps order per partition, so a later record acknowledged on the same
partition (the call's report, on the agent's telemetry partition) was written after it.
(Except when the producer is replaced: a permit's record written again then lands after the
report, once.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.deadletter import SourceCoordinates, dead_letter_value
from mesh.domain.envelope import Envelope, RecipientKind, new_envelope
from mesh.domain.identity import AgentKey
from mesh.domain.topics import DLQ, TASKS, TELEMETRY
from mesh.errors import KafkaUnavailableError, MeshError, ProcessorError
from sidecar.telemetry import TELEMETRY_SUBJECT, Kind, telemetry_body, telemetry_envelope

__all__ = ["ACK_TIMEOUT_S", "KafkaSink", "MemorySink", "Outbox", "Record", "Sink"]

_log = logging.getLogger("mesh.sidecar")

#: (full topic name, key, value)
Record = tuple[str, bytes, bytes]


class Sink(Protocol):
    #: how long a wait for acknowledgements may take before what is late is written again
    ack_timeout_s: float

    async def write(self, records: Sequence[Record]) -> None:
        """Write every record and wait until each is acknowledged (or raise)."""
        ...

    async def enqueue(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        """Hand the records to the client; the futures resolve when each is acknowledged."""
        ...


#: How long a write waits for the broker's acknowledgement before the producer is replaced.
ACK_TIMEOUT_S = 15.0


class KafkaSink:
    """An idempotent aiokafka producer (``acks=all``) whose acknowledgements are waited for at
    most ``ack_timeout_s``.

    aiokafka's idempotent producer never expires a batch: it retries until the broker takes
    it, and a producer that has lost its way waits on, silently, for ever (aio-libs/aiokafka
    issue 1101). A send or a heartbeat must not hang on it. Records not acknowledged within
    ``ack_timeout_s`` are written once more through a new producer (a new producer id), and
    only then, if they are still not acknowledged, does the write raise. A record can
    therefore land twice, if the old producer was slow rather than lost: receivers skip a
    message id they delivered already, and a registry event repeated changes nothing; a
    telemetry record repeated is counted twice (at least once, never lost unreported).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        ack_timeout_s: float = ACK_TIMEOUT_S,
        factory: Callable[..., Any] = AIOKafkaProducer,
    ) -> None:
        self._producer: Any = None
        self._config = dict(config)
        self._factory = factory
        self.ack_timeout_s = ack_timeout_s
        self.replacements = 0  # producers replaced after an acknowledgement did not come

    async def start(self) -> None:
        if self._producer is None:
            producer = self._factory(**self._config)
            await producer.start()
            self._producer = producer

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush and close; bounded, so a broker that went away cannot hold a stop forever
        (what was not acknowledged by then was never reported as written)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await _close(producer, timeout_s)

    async def write(self, records: Sequence[Record]) -> None:
        waiting = list(records)
        for attempt in (1, 2):
            futures = await self.enqueue(waiting)
            done = await _acknowledged(futures, self.ack_timeout_s)
            waiting = [r for r, f in zip(waiting, futures, strict=True) if f not in done]
            if not waiting:
                return
            if attempt == 1:
                await self._replace(len(waiting))
        raise KafkaUnavailableError(
            f"the broker did not acknowledge {len(waiting)} record(s) within "
            f"{self.ack_timeout_s:g}s, twice (the second time through a new producer); they "
            "may or may not have been written. Retry once the broker is reachable"
        )

    async def enqueue(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        if self._producer is None:
            raise ProcessorError("the sidecar is not started (its producer is closed)")
        try:
            return [await self._producer.send(t, value, key) for t, key, value in records]
        except KafkaError as exc:
            raise _unavailable(len(records), exc) from exc

    async def _replace(self, waiting: int) -> None:
        self.replacements += 1
        _log.warning(
            "%d record(s) not acknowledged within %gs; the producer is replaced and they are "
            "written again",
            waiting,
            self.ack_timeout_s,
        )
        old, self._producer = self._producer, None
        await self.start()
        await _close(old, 2.0)


async def _acknowledged(
    futures: Sequence[asyncio.Future[Any]], timeout_s: float
) -> set[asyncio.Future[Any]]:
    """The futures acknowledged within ``timeout_s``; raises if the broker refused any."""
    if not futures:
        return set()
    done, _ = await asyncio.wait(futures, timeout=timeout_s)
    for future in done:
        if (exc := future.exception()) is not None:
            raise _unavailable(len(futures), exc) from exc
    return done


async def _close(producer: Any, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await producer.stop()
    except TimeoutError:
        _log.warning("the producer did not flush and close within %gs", timeout_s)
        with contextlib.suppress(Exception):  # its connections, at least, are closed
            async with asyncio.timeout(2):
                await producer.client.close()


def _unavailable(count: int, exc: BaseException) -> KafkaUnavailableError:
    return KafkaUnavailableError(
        f"the broker did not take {count} record(s): {exc!r}; nothing is reported as "
        "written. Retry once the broker is reachable"
    )


class MemorySink:
    """Records kept in a list (unit tests)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.ack_timeout_s = ACK_TIMEOUT_S  # its futures are resolved when handed out

    async def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    async def enqueue(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        self.records.extend(records)
        futures: list[asyncio.Future[Any]] = []
        for _ in records:
            futures.append(done := asyncio.get_running_loop().create_future())
            done.set_result(None)
        return futures


class Outbox:
    def __init__(
        self,
        agent_id: str,
        key: AgentKey,
        codec: MessageCodec,
        prefix: str,
        sink: Sink,
        instance_id: str | None = None,
    ) -> None:
        self.agent_id, self.key, self.codec, self.prefix = agent_id, key, codec, prefix
        self.sink = sink
        self.instance_id = instance_id  # stamped on telemetry: which replica observed it
        # written soon, not yet seen acknowledged: each record with its future
        self._soon: list[tuple[Record, asyncio.Future[Any]]] = []

    async def write(self, *records: Record) -> None:
        """Write and wait; also wait for what :meth:`write_soon` handed over before (raising
        if any of it failed)."""
        await self.sink.write(records)
        await self._settle()

    async def write_soon(self, *records: Record) -> None:
        """Hand records to the producer without waiting for the broker (see the module)."""
        self._soon += zip(records, await self.sink.enqueue(records), strict=True)
        if len(self._soon) > 1000:
            await self._settle()

    async def _settle(self) -> None:
        """Wait (bounded) for what was handed over; what the producer did not acknowledge in
        time is written again through the sink, which replaces a producer that is stuck."""
        if not self._soon:
            return
        pending, self._soon = self._soon, []
        done = await _acknowledged([f for _, f in pending], self.sink.ack_timeout_s)
        if late := [record for record, future in pending if future not in done]:
            await self.sink.write(late)

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def message(self, envelope: Envelope, subject: str, body: Mapping[str, Any]) -> bytes:
        return self.codec.seal(envelope, subject, body, self.key)

    def event(
        self, topic: str, subject: str, body: Mapping[str, Any], key: str | None = None
    ) -> Record:
        """A signed fact about the agent (registry events, task events), keyed by ``key``."""
        envelope = new_envelope(
            self.agent_id,
            "",
            recipient_kind=RecipientKind.BROADCAST,
            task_id=key if topic == TASKS else None,
        )
        value = self.codec.seal(envelope, subject, body, self.key)
        return self.topic(topic), (key or self.agent_id).encode(), value

    def telemetry(
        self, kind: Kind, name: str, *, about: Envelope | None = None, **fields: Any
    ) -> Record:
        body = telemetry_body(self.agent_id, kind, name, instance_id=self.instance_id, **fields)
        value = self.codec.seal(
            telemetry_envelope(self.agent_id, about), TELEMETRY_SUBJECT, body, self.key
        )
        return self.topic(TELEMETRY), self.agent_id.encode(), value

    def dead_letter(
        self, error: MeshError, original: bytes, source: SourceCoordinates, detected_by: str
    ) -> Record:
        value = dead_letter_value(self.codec.serde, error, original, detected_by, source)
        return self.topic(DLQ), source.key or b"", value
