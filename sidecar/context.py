"""A task's shared context as the state projections processor holds it (``mesh.state.v1``).

Reads the one partition the task id hashes to, from its beginning (the topic is compacted, so
this is about one record per task), and returns the newest state. On aiokafka like the rest
of the sidecar: one client library per service.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from mesh.adapters.kafka.config import aiokafka_consumer_config
from mesh.adapters.kafka.partitioning import partition_for
from mesh.adapters.serde.codec import Serde
from mesh.domain.topics import STATE
from mesh.errors import KafkaUnavailableError
from mesh.settings import Cluster

__all__ = ["read_task_state"]


async def read_task_state(
    cluster: Cluster, serde: Serde, task_id: str, partitions: int
) -> dict[str, Any] | None:
    """The task's current state record (None: the mesh has seen no event of it);
    ``partitions``: the state topic's partition count."""
    topic = cluster.topic(STATE)
    consumer = AIOKafkaConsumer(**aiokafka_consumer_config(cluster, None))
    key = task_id.encode()
    try:
        await consumer.start()
        latest = await _latest(consumer, TopicPartition(topic, partition_for(key, partitions)), key)
    except KafkaError as exc:
        raise KafkaUnavailableError(f"cannot read {topic}: {exc}; is the broker up?") from exc
    finally:
        await consumer.stop()
    return serde.decode(latest).record if latest is not None else None


async def _latest(consumer: AIOKafkaConsumer, tp: TopicPartition, key: bytes) -> bytes | None:
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    latest: bytes | None = None
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=200)
        for record in batch.get(tp, []):
            if record.key == key:
                latest = record.value
    return latest
