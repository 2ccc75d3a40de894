"""The same key lands on the same partition from confluent-kafka and aiokafka."""

from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import aiokafka_producer_config, producer_config
from mesh.domain.topics import TASKS
from mesh.settings import Cluster, Settings


async def test_partitioners_agree(settings: Settings, topics: TopicAdmin) -> None:
    topic = f"{settings.topic_prefix}{TASKS}"
    bootstrap = settings.bootstrap_servers or ""
    keys = [f"task-{i}".encode() for i in range(200)]

    from_confluent: dict[bytes, int] = {}
    producer = Producer(producer_config(Cluster(settings, bootstrap)))
    for key in keys:
        producer.produce(
            topic,
            b"v",
            key,
            on_delivery=lambda e, m: from_confluent.__setitem__(m.key(), m.partition()),
        )
    producer.flush(15)

    from_aiokafka: dict[bytes, int] = {}
    aio = AIOKafkaProducer(**aiokafka_producer_config(Cluster(settings, bootstrap)))
    await aio.start()
    try:
        for key in keys:
            metadata = await aio.send_and_wait(topic, b"v", key=key)
            from_aiokafka[key] = metadata.partition
    finally:
        await aio.stop()

    assert from_confluent == from_aiokafka
    assert len(set(from_confluent.values())) == settings.partitions  # keys spread over all
