"""The inbox's consumer: the agent's consumer group (replicas share its partitions) feeding
:class:`~sidecar.inbox.Inbox`, and committing only what the inbox says is due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.domain.topics import (
    APPROVALS,
    CONTROL,
    KEYS,
    POLICIES,
    REGISTRY,
    STATE,
    THROTTLES,
    inbox_topic,
)
from mesh.errors import KafkaUnavailableError, ProcessorError, TopicNotFoundError
from mesh.settings import Cluster
from sidecar.inbox import Inbox, Position

__all__ = ["STOP_TIMEOUT_S", "InboxConsumer", "ensure_topics"]

#: Bound on each step of stopping a client (a commit, leaving the group, a producer's flush).
STOP_TIMEOUT_S = 10.0
_log = logging.getLogger("mesh.sidecar")


class InboxConsumer:
    def __init__(self, topic: str, config: Mapping[str, Any], inbox: Inbox) -> None:
        self.topic, self._config, self.inbox = topic, dict(config), inbox
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(self.topic, **self._config)
            await consumer.start()
            self._consumer = consumer

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Commit what is due, then leave the group (idempotent).

        Each step is bounded: aiokafka retries a commit while the group coordinator moves or
        the group rebalances, and leaving the group waits on the coordinator too, without
        limit. A stop must not hang on either: what is not committed is redelivered (at least
        once), and a member that did not leave is dropped when its session times out.
        """
        if self._consumer is None:
            return
        consumer, self._consumer = self._consumer, None
        try:
            async with asyncio.timeout(timeout_s):
                await self._commit(consumer)
        except TimeoutError:
            raise KafkaUnavailableError(
                f"the last commit of {self.topic} did not finish within {timeout_s:g}s; what it "
                "held is delivered again"
            ) from None
        finally:
            try:
                async with asyncio.timeout(timeout_s):
                    await consumer.stop()
            except TimeoutError:
                _log.warning(
                    "%s: leaving the group took over %gs; left to expire", self.topic, timeout_s
                )
                with contextlib.suppress(Exception):  # its connections, at least, are closed
                    async with asyncio.timeout(2):
                        await consumer._client.close()  # aiokafka has no public close-only

    async def run(self) -> None:
        """Admit records until cancelled (the sidecar's supervisor restarts it on a failure)."""
        consumer = self._open()
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=200)
            for tp, records in batches.items():
                at = Position(tp.topic, tp.partition)
                for record in records:
                    appended = record.timestamp if record.timestamp_type == 1 else None
                    value = record.value or b""
                    await self.inbox.admit(at, record.offset, record.key, value, appended)

    async def commit_every(self, interval_s: float = 0.2) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.commit()

    async def commit(self) -> None:
        await self._commit(self._open())

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        due = self.inbox.due()
        if due:
            offsets = {
                TopicPartition(a.topic, a.partition): OffsetAndMetadata(o, "")
                for a, o in due.items()
            }
            await consumer.commit(offsets)
            self.inbox.committed(due)

    def _open(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise ProcessorError(f"the inbox consumer of {self.topic} is not started")
        return self._consumer


def ensure_topics(cluster: Cluster, agent_id: str) -> dict[str, int]:
    """Create the inbox if need be; return the partition counts of the topics the sidecar
    reads (the registry, the key directory and control, followed; the state projections,
    read per task)."""
    admin = TopicAdmin(cluster)
    admin.ensure([inbox_topic(agent_id)])
    live = admin.topic_partitions()
    followed = [
        cluster.topic(t) for t in (REGISTRY, KEYS, CONTROL, POLICIES, APPROVALS, THROTTLES, STATE)
    ]
    missing = [topic for topic in followed if not live.get(topic)]
    if missing:
        raise TopicNotFoundError(
            f"topic {missing[0]} does not exist; run `mesh topics ensure` (or `mesh up`)"
        )
    return {topic: live[topic] for topic in followed}
