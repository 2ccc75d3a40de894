"""Reading to the end on the real broker: "the end" includes a transaction that just committed."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Producer, TopicPartition

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import transactional_producer_config
from mesh.adapters.kafka.reading import last_record, reader, watermarks
from mesh.domain.topics import TASKS
from mesh.settings import Cluster, Settings


def test_the_end_is_the_high_watermark_and_a_committing_transaction_is_waited_for(
    settings: Settings, topics: TopicAdmin
) -> None:
    bootstrap = settings.bootstrap_servers or ""
    topic = f"{settings.topic_prefix}{TASKS}"
    producer = Producer(
        transactional_producer_config(Cluster(settings, bootstrap), f"{topic}-reading")
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed later", b"k", partition=0)
    assert producer.flush(30) == 0

    consumer = reader(Cluster(settings, bootstrap))
    try:
        # The open transaction's record counts towards the end (the last stable offset would
        # not), so a read to the end waits for the transaction instead of stopping before it.
        assert watermarks(consumer, TopicPartition(topic, 0)) == (0, 1)
        commit = threading.Timer(0.5, lambda: producer.commit_transaction(30))
        commit.start()
        started = time.monotonic()
        found = last_record(consumer, topic, 0)
        waited = time.monotonic() - started
        commit.join()
    finally:
        consumer.close()
    assert found is not None and found.value() == b"committed later"
    assert waited >= 0.4, "the read must have waited for the commit, not raced past it"
