"""Follow the registry and the control topic from their beginning, forever: one aiokafka
consumer, no consumer group, so every replica sees every record.

``caught_up`` is set once what existed at start has been read, so a halt issued while the
sidecar was down applies before it does anything. Afterwards the follower *confirms* every
``confirm_every_s`` that it stands at the end of each followed partition (it asks the broker
for the end offsets): ``on_confirmed(now)`` is how the sidecar knows its view of the control
topic is current, and the absence of confirmations is how it knows it is not (see
:mod:`sidecar.halts`). A broker that does not answer is logged and retried, never raised: the
missing confirmations already make the sidecar fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from mesh.adapters.kafka.config import aiokafka_consumer_config
from mesh.settings import Cluster

__all__ = ["Follower"]

OnRecord = Callable[[ConsumerRecord], None]
_log = logging.getLogger("mesh.sidecar")


class Follower:
    def __init__(
        self,
        cluster: Cluster,
        handlers: Mapping[str, OnRecord],
        partitions: Mapping[str, int],
        on_confirmed: Callable[[float], None],
        confirm_every_s: float = 1.0,
    ) -> None:
        self._handlers = dict(handlers)
        self._tps = [TopicPartition(t, p) for t in handlers for p in range(partitions[t])]
        self._on_confirmed = on_confirmed
        self._confirm_every_s = confirm_every_s
        self._consumer = AIOKafkaConsumer(**aiokafka_consumer_config(cluster, None))
        self.caught_up = asyncio.Event()
        self.unanswered = 0  # confirmations the broker did not answer

    async def start(self) -> dict[TopicPartition, int]:
        """Assign every partition at its beginning; returns the end offsets to catch up to."""
        await self._consumer.start()
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(self._tps)
        return ends

    async def run(self, ends: dict[TopicPartition, int]) -> None:
        """Fold records forever; returns only by cancellation (or raises if the client fails)."""
        pending = {tp: end for tp, end in ends.items() if end > 0}
        next_confirm = 0.0
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=500)
            for tp, records in batches.items():
                handler = self._handlers[tp.topic]
                for record in records:
                    handler(record)
            if pending:
                pending = {tp: e for tp, e in pending.items() if await self._behind(tp, e)}
                if not pending:
                    self.caught_up.set()
                    self._on_confirmed(time.monotonic())
            elif time.monotonic() >= next_confirm:
                next_confirm = time.monotonic() + self._confirm_every_s
                await self._confirm()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def _behind(self, tp: TopicPartition, end: int) -> bool:
        position: int = await self._consumer.position(tp)
        return position < end

    async def _confirm(self) -> None:
        asked = time.monotonic()
        try:
            ends = await asyncio.wait_for(
                self._consumer.end_offsets(self._tps), self._confirm_every_s * 2
            )
        except (KafkaError, TimeoutError) as exc:
            self.unanswered += 1
            _log.warning("the broker did not confirm the followed topics' ends: %r", exc)
            return
        for tp, end in ends.items():
            if await self._behind(tp, end):
                return  # records still to read: confirmed once they are
        self.caught_up.set()
        self._on_confirmed(asked)
