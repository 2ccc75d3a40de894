"""Follow a topic from its beginning, forever, with aiokafka (no consumer group).

The sidecar follows the registry (sender keys, capabilities) and the control topic (halts)
this way: every replica sees every record, and ``caught_up`` tells when what existed at start
has been read, so a halt issued while the sidecar was down applies before it does anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from mesh.adapters.kafka.config import aiokafka_consumer_config
from mesh.settings import Settings

__all__ = ["Follower"]

OnRecord = Callable[[ConsumerRecord], None]


class Follower:
    def __init__(
        self, settings: Settings, bootstrap: str, topic: str, partitions: int, on_record: OnRecord
    ) -> None:
        self.topic = topic
        self._partitions = partitions
        self._on_record = on_record
        self._consumer = AIOKafkaConsumer(**aiokafka_consumer_config(settings, bootstrap, None))
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self._partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._run(ends), name=f"follow {self.topic}")

    async def wait_caught_up(self, timeout_s: float = 30.0) -> None:
        await asyncio.wait_for(self.caught_up.wait(), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self, ends: dict[TopicPartition, int]) -> None:
        pending = {tp: end for tp, end in ends.items() if end > 0}
        if not pending:
            self.caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=500)
            for records in batches.values():
                for record in records:
                    self._on_record(record)
            if pending:
                for tp in list(pending):
                    if await self._consumer.position(tp) >= pending[tp]:
                        del pending[tp]
                if not pending:
                    self.caught_up.set()
