"""What leaves the sidecar: every record sealed with the agent's key, then written and awaited.

:class:`Outbox` seals (events, telemetry, dead letters) and writes through a :class:`Sink`, the
port to Kafka: :class:`KafkaSink` on aiokafka in production, :class:`MemorySink` in unit tests.
Writing awaits every delivery, so a call that returns was written and a call that raises wrote
nothing it reports as written. Client errors are translated here into KafkaUnavailableError.

:meth:`Outbox.write_soon` hands a record to the producer without waiting for the broker (a tool
permit's record: the call it authorizes must not wait a round trip for its audit trail). Its
delivery is awaited by the next :meth:`Outbox.write`, which raises if it failed; the producer
is idempotent and keeps order per partition, so a later record acknowledged on the same
partition (the call's report, on the agent's telemetry partition) was written after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
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

__all__ = ["KafkaSink", "MemorySink", "Outbox", "Record", "Sink"]

_log = logging.getLogger("mesh.sidecar")

#: (full topic name, key, value)
Record = tuple[str, bytes, bytes]


class Sink(Protocol):
    async def write(self, records: Sequence[Record]) -> None:
        """Write every record and wait until each is acknowledged (or raise)."""
        ...

    async def enqueue(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        """Hand the records to the client; the futures resolve when each is acknowledged."""
        ...


class KafkaSink:
    """An idempotent aiokafka producer (``acks=all``)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._producer: AIOKafkaProducer | None = None
        self._config = dict(config)

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(**self._config)
            await producer.start()
            self._producer = producer

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush and close; bounded, so a broker that went away cannot hold a stop forever
        (what was not acknowledged by then was never reported as written)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                async with asyncio.timeout(timeout_s):
                    await producer.stop()
            except TimeoutError:
                _log.warning("the producer did not flush and close within %gs", timeout_s)
                with contextlib.suppress(Exception):  # its connections, at least, are closed
                    async with asyncio.timeout(2):
                        await producer.client.close()

    async def write(self, records: Sequence[Record]) -> None:
        futures = await self.enqueue(records)
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise _unavailable(len(records), exc) from exc

    async def enqueue(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        if self._producer is None:
            raise ProcessorError("the sidecar is not started (its producer is closed)")
        try:
            return [await self._producer.send(t, value, key) for t, key, value in records]
        except KafkaError as exc:
            raise _unavailable(len(records), exc) from exc


def _unavailable(count: int, exc: KafkaError) -> KafkaUnavailableError:
    return KafkaUnavailableError(
        f"the broker did not take {count} record(s): {exc!r}; nothing is reported as "
        "written. Retry once the broker is reachable"
    )


class MemorySink:
    """Records kept in a list (unit tests)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    async def enqueue(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        self.records.extend(records)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [done]


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
        self._soon: list[asyncio.Future[Any]] = []  # written soon, not yet seen acknowledged

    async def write(self, *records: Record) -> None:
        """Write and wait; also wait for what :meth:`write_soon` handed over before (raising
        if any of it failed)."""
        await self.sink.write(records)
        await self._settle()

    async def write_soon(self, *records: Record) -> None:
        """Hand records to the producer without waiting for the broker (see the module)."""
        self._soon += await self.sink.enqueue(records)
        if len(self._soon) > 1000:
            await self._settle()

    async def _settle(self) -> None:
        if not self._soon:
            return
        pending, self._soon = self._soon, []
        try:
            await asyncio.gather(*pending)
        except KafkaError as exc:
            raise _unavailable(len(pending), exc) from exc

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
