"""Shared fixtures. Unit tests touch no network; integration tests share one real broker.

The broker comes from the same rule as the mesh itself (mesh.adapters.kafka.source.acquire_broker):
MESH_BOOTSTRAP_SERVERS if set, else a local broker from the jars started for this session
in a temporary directory on a free port, else testcontainers where Docker runs. Tests isolate
themselves by topic prefix, so they can share it.
"""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.source import BrokerLease, acquire_broker
from mesh.adapters.keyfiles import control_signers
from mesh.settings import Cluster, Settings, load_settings


def free_port_pair(count: int = 2) -> int:
    """A port p such that p and p+1 (and on to p+count-1) can be bound (the local broker's
    controller uses p+1, a TLS listener p+2).

    Chosen below the kernel's ephemeral range (32768 and up), where the many client
    connections of a test run take their local ports: a port that was free when probed there
    could be taken by an outgoing connection before the broker binds it."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)  # noqa: S311 (a port, not a secret)
        if all(_bindable(port + n) for n in range(count)):
            return port
    raise RuntimeError("no free port pair found")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerLease]:
    settings = load_settings()
    data_dir = tmp_path_factory.mktemp("kafka")
    lease = acquire_broker(settings, data_dir=data_dir, port=free_port_pair())
    yield lease
    lease.release()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def settings(broker: BrokerLease, prefix: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, its own topic prefix and state dir, with the
    mesh's and the operator's keys in it, as `mesh up` leaves them (the trust anchors)."""
    settings = load_settings().with_overrides(
        bootstrap_servers=broker.bootstrap,
        topic_prefix=prefix,
        state_dir=tmp_path / "state",
        partitions=3,
    )
    control_signers(settings)  # creates both key files
    return settings


@pytest.fixture
def topics(settings: Settings) -> TopicAdmin:
    """The catalogue's topics, created under the test's prefix."""
    admin = TopicAdmin(Cluster.of(settings))
    admin.ensure()
    return admin
