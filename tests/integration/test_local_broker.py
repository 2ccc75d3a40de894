"""The local broker's lifecycle, on its own port and directory (not the session broker)."""

import os
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from mesh.adapters.localkafka import LocalKafka
from mesh.settings import DEFAULT_KAFKA_VERSION
from tests.conftest import free_port_pair


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_up_status_down_up_keeps_data(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", free_port_pair(), version=DEFAULT_KAFKA_VERSION)
    try:
        started = broker.up()
        assert started.running and started.started_in_s is not None
        again = broker.up()
        assert again.pid == started.pid and again.started_in_s is None  # second up: no-op
        assert broker.status().bootstrap == f"127.0.0.1:{broker.port}"

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("kept", 1, 1)])["kept"].result()
        del admin
        assert broker.down() is True
        assert broker.status().running is False
        assert broker.down() is False  # nothing left to stop

        restarted = broker.up()
        assert restarted.pid != started.pid
        assert "kept" in _topics(broker.bootstrap)
    finally:
        broker.down()


def test_down_never_stops_a_process_it_did_not_start(tmp_path: Path) -> None:
    directory = tmp_path / "kafka"
    directory.mkdir()
    (directory / "broker.json").write_text(f'{{"pid": {os.getpid()}, "bootstrap": "x:1"}}')
    broker = LocalKafka(directory, free_port_pair(), version=DEFAULT_KAFKA_VERSION)
    assert broker.status().running is False
    assert broker.down() is False  # this test process is still alive to assert it
