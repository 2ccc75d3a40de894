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


def test_mesh_kafka_up_brokers_3_runs_a_cluster_the_mesh_replicates_on(tmp_path: Path) -> None:
    """Issue 15: `mesh kafka up --brokers 3`, its status, the mesh's topics on it with three
    replicas and two in sync, and one `mesh kafka down` that stops every node."""
    from confluent_kafka.admin import ConfigResource

    from tests.integration.test_cli import run

    port = free_port_pair(9)
    env = {"MESH_STATE_DIR": str(tmp_path), "MESH_KAFKA_PORT": str(port)}
    try:
        up = run(["kafka", "up", "--brokers", "3"], **env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Kafka cluster of 3 nodes started in" in up.stdout
        bootstrap = ",".join(f"127.0.0.1:{port + 3 * n}" for n in range(3))
        assert f"use: MESH_BOOTSTRAP_SERVERS={bootstrap} MESH_REPLICATION_FACTOR=3" in up.stdout
        status = run(["kafka", "status", "--brokers", "3"], **env)
        assert status.returncode == 0 and status.stdout.count(": running, pid") == 3
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert len(admin.list_topics(timeout=10).brokers) == 3

        mesh = {**env, "MESH_BOOTSTRAP_SERVERS": bootstrap, "MESH_REPLICATION_FACTOR": "3"}
        ensured = run(["topics", "ensure"], **mesh)
        assert ensured.returncode == 0, ensured.stdout + ensured.stderr
        audit = admin.list_topics("mesh.audit.v1", timeout=10).topics["mesh.audit.v1"]
        assert {len(p.replicas) for p in audit.partitions.values()} == {3}
        resource = ConfigResource(ConfigResource.Type.TOPIC, "mesh.audit.v1")
        configs = admin.describe_configs([resource])[resource].result()
        assert configs["min.insync.replicas"].value == "2"
    finally:
        down = run(["kafka", "down"], **env)
    assert "Kafka cluster stopped (3 nodes)" in down.stdout
    assert run(["kafka", "status", "--brokers", "3"], **env).returncode == 1
