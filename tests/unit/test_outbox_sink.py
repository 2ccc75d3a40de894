"""KafkaSink's bound on acknowledgements: a producer that never acknowledges is replaced, and
what it held is written again through the new one; no wait is unbounded.

The producer here is a stand-in for the client object only (its ``send`` returns a future the
test resolves or leaves pending); the broker-facing behaviour is covered by the integration
tests on a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.errors import KafkaUnavailableError
from sidecar.outbox import KafkaSink, Outbox


class Producer:
    """Acknowledges every record, unless built as ``lost``: then it never answers."""

    def __init__(self, lost: bool) -> None:
        self.lost, self.stopped = lost, False
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.lost:
            future.set_result(None)
        self.futures.append(future)
        return future


def factory(*lost: bool) -> tuple[Any, list[Producer]]:
    """A factory whose n-th producer is lost if ``lost[n]`` (then healthy ones)."""
    built: list[Producer] = []

    def make(**_: Any) -> Producer:
        built.append(Producer(lost[len(built)] if len(built) < len(lost) else False))
        return built[-1]

    return make, built


async def test_a_write_the_producer_never_acknowledges_goes_out_again_through_a_new_one() -> None:
    make, built = factory(True)
    sink = KafkaSink({}, ack_timeout_s=0.05, factory=make)
    await sink.start()
    records = [("inbox", b"k", b"one"), ("inbox", b"k", b"two")]
    await sink.write(records)
    assert len(built) == 2 and built[0].stopped and not built[1].stopped
    assert built[1].sent == records and sink.replacements == 1
    await sink.write([("inbox", b"k", b"three")])  # the new producer serves on
    assert sink.replacements == 1 and built[1].sent[-1][2] == b"three"


async def test_a_write_unacknowledged_by_two_producers_raises_and_names_the_wait() -> None:
    make, built = factory(True, True)
    sink = KafkaSink({}, ack_timeout_s=0.05, factory=make)
    await sink.start()
    with pytest.raises(KafkaUnavailableError, match=r"did not acknowledge 1 record\(s\) within"):
        await sink.write([("inbox", b"k", b"one")])
    assert len(built) == 2 and sink.replacements == 1


async def test_only_the_records_not_acknowledged_are_written_again() -> None:
    make, built = factory(False)
    sink = KafkaSink({}, ack_timeout_s=0.05, factory=make)
    await sink.start()
    first = built[0]
    first.lost = True  # from now on this producer answers nothing
    await sink.write([("t", b"k", b"late")])
    assert [r[2] for r in built[1].sent] == [b"late"]


async def test_a_refusal_by_the_broker_is_raised_not_retried() -> None:
    make, built = factory(True)
    sink = KafkaSink({}, ack_timeout_s=5, factory=make)
    await sink.start()
    task = asyncio.create_task(sink.write([("t", b"k", b"v")]))
    await asyncio.sleep(0.01)
    built[0].futures[0].set_exception(RuntimeError("MessageSizeTooLarge"))
    with pytest.raises(KafkaUnavailableError, match="MessageSizeTooLarge"):
        await task
    assert sink.replacements == 0


async def test_records_handed_over_soon_are_settled_within_the_bound_by_the_next_write() -> None:
    """A permit's record handed to a producer that is lost is written again by the next write
    (through the new producer), not waited for without end."""
    make, built = factory(True)
    sink = KafkaSink({}, ack_timeout_s=0.05, factory=make)
    await sink.start()
    codec = MessageCodec(Serde(InMemoryRegistry()), PublicKeys())
    outbox = Outbox("a", AgentKey.generate("a"), codec, "", sink)
    await outbox.write_soon(("telemetry", b"a", b"permit"))
    await outbox.write(("telemetry", b"a", b"report"))
    assert [r[2] for r in built[1].sent] == [b"report", b"permit"]
    await outbox.write(("telemetry", b"a", b"next"))  # nothing of the lost producer is left
    assert [r[2] for r in built[1].sent] == [b"report", b"permit", b"next"]
