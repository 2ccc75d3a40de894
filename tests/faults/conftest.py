"""The faults tier: brokers and processes killed with SIGKILL under load, on real Kafka.

Broker faults need a broker of their own (killing the session's would take every other test
with it): :func:`own_broker` starts one in the test's directory and can kill and restart it.
Process faults use the session broker. :func:`own_cluster` starts a three-node cluster of its
own (``mesh kafka up --brokers 3``), with the mesh's topics on three replicas.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh.adapters.keyfiles import control_signers
from mesh.adapters.localkafka.broker import LocalKafka
from mesh.adapters.localkafka.cluster import PORTS_PER_NODE, LocalCluster
from mesh.settings import Settings, load_settings
from tests.conftest import free_port_pair


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@dataclass
class OwnBroker:
    kafka: LocalKafka
    settings: Settings

    def kill(self) -> None:
        """SIGKILL the broker process: no shutdown, no flush, as a crash or an OOM kill."""
        self.kafka.kill()

    def restart(self) -> float:
        """Start it again on the same data and port; returns the seconds it took."""
        started = time.monotonic()
        self.kafka.up()
        return time.monotonic() - started


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    if load_settings().bootstrap_servers:
        pytest.skip("MESH_BOOTSTRAP_SERVERS names a cluster; a broker kill needs a local one")
    base = load_settings()
    kafka = LocalKafka(tmp_path / "kafka", free_port_pair(), version=base.kafka_version)
    kafka.up()
    settings = _faults_settings(base, kafka.bootstrap, tmp_path)
    try:
        yield OwnBroker(kafka, settings)
    finally:
        kafka.down()


@dataclass
class OwnCluster:
    kafka: LocalCluster
    settings: Settings


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[OwnCluster]:
    if load_settings().bootstrap_servers:
        pytest.skip("MESH_BOOTSTRAP_SERVERS names a cluster; a broker kill needs a local one")
    base = load_settings()
    size = 3
    kafka = LocalCluster(
        tmp_path / "kafka",
        free_port_pair(size * PORTS_PER_NODE),
        size,
        version=base.kafka_version,
        heap="512m",
    )
    kafka.up()
    settings = _faults_settings(base, kafka.bootstrap, tmp_path, replication_factor=3)
    try:
        yield OwnCluster(kafka, settings)
    finally:
        kafka.down()


def _faults_settings(base: Settings, bootstrap: str, tmp_path: Path, **extra: object) -> Settings:
    """The test's own prefix and state directory on ``bootstrap``, trust anchors made."""
    settings = base.with_overrides(
        bootstrap_servers=bootstrap,
        topic_prefix="faults.",
        state_dir=tmp_path / "state",
        partitions=3,
        **extra,
    )
    control_signers(settings)
    return settings
