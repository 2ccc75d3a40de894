"""Issue 14: a broker killed (SIGKILL) under load and started again 5 s later. The processors
carry on by themselves, and afterwards every source record is in the audit exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from confluent_kafka import KafkaException, Producer

from mesh.adapters.kafka.config import producer_config
from mesh.settings import Cluster, Settings
from tests.faults.conftest import OwnBroker
from tests.faults.processes import Watched
from tests.integration.fleet import codec_for, committed_total
from tests.integration.test_audit import (
    SOURCES,
    audited,
    ensure_all,
    mixed_events,
    source_coordinates,
)
from tests.integration.test_cli import run

TOTAL = 3_000


class Load(threading.Thread):
    """Produces ``TOTAL`` records in chunks, riding out the broker's absence (the client
    queues and retries; an idempotent producer writes each once)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.failures: list[str] = []
        self.produced = 0

    def run(self) -> None:
        producer = Producer(producer_config(Cluster.of(self.settings)))
        events = mixed_events(TOTAL)

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                self.failures.append(str(error))

        for start in range(0, TOTAL, 100):
            for event in events[start : start + 100]:
                topic = f"{self.settings.topic_prefix}{event.topic}"
                while True:
                    try:
                        producer.produce(
                            topic, event.value, event.key.encode(), on_delivery=delivered
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
            self.produced = start + 100
            time.sleep(0.2)
        assert producer.flush(180) == 0, "records still queued 180 s after the load ended"


def audited_so_far(settings: Settings, group: str = "faults.mesh-audit") -> int:
    """Source records the audit group has committed (-1 while the broker is away)."""
    try:
        return committed_total(settings, group, SOURCES, settings.partitions)
    except KafkaException:
        return -1


def test_processors_carry_on_through_a_broker_kill_and_the_audit_is_exact(
    own_broker: OwnBroker,
) -> None:
    settings = own_broker.settings
    ensure_all(settings)
    codec, registry = codec_for(settings)
    registry.close()
    audit = Watched(settings, "audit")
    try:
        audit.ready_after_s(120)
        load = Load(settings)
        load.start()
        while load.produced < 600:
            time.sleep(0.05)
        own_broker.kill()
        time.sleep(5)
        own_broker.restart()
        load.join(300)
        assert not load.is_alive() and load.failures == []

        deadline = time.monotonic() + 240
        while audited_so_far(settings) != TOTAL:
            assert audit.process.poll() is None, f"the processor exited:\n{audit.output()}"
            assert time.monotonic() < deadline, (
                f"audited {audited_so_far(settings)} of {TOTAL}:\n{audit.output()}"
            )
            time.sleep(0.5)
        assert audit.process.poll() is None  # it carried on by itself
    finally:
        code = audit.stop()
    assert code == 0, audit.output()

    codec, registry = codec_for(settings)
    links = [link for _, _, link in audited(settings, codec.serde) if link is not None]
    registry.close()
    coordinates = Counter((x.source_topic, x.source_partition, x.source_offset) for x in links)
    assert [c for c, n in coordinates.items() if n > 1] == []  # nothing twice
    assert set(coordinates) == source_coordinates(settings)  # nothing missing
    verified = run(["audit", "verify", "--complete"], settings)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "complete: every record of" in verified.stdout
