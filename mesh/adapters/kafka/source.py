"""Where the broker comes from, decided in one place.

1. ``MESH_BOOTSTRAP_SERVERS``: an existing cluster always wins.
2. Otherwise the local broker of ``mesh kafka up`` (started here if asked to).
3. Only for tests and benchmarks, and only where a Docker engine runs: testcontainers' Kafka.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mesh.adapters.localkafka import local_kafka
from mesh.errors import KafkaUnavailableError
from mesh.settings import Cluster, Settings

__all__ = ["BrokerLease", "acquire_broker", "bootstrap_servers", "resolve"]


@dataclass(frozen=True, slots=True)
class BrokerLease:
    """A broker to use, where it came from, and how to give it back."""

    bootstrap: str
    origin: str
    release: Callable[[], None]


def bootstrap_servers(settings: Settings) -> str:
    """The cluster to talk to now; never starts anything."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    status = local_kafka(settings).status()
    if status.running and status.bootstrap:
        return status.bootstrap
    raise KafkaUnavailableError(
        "no Kafka to talk to: MESH_BOOTSTRAP_SERVERS is unset and the local broker is not "
        "running. Run `mesh kafka up`, or set MESH_BOOTSTRAP_SERVERS=host:port"
    )


def resolve(settings: Settings) -> Cluster:
    """The cluster to talk to now, resolved once (see :func:`bootstrap_servers`)."""
    return Cluster(settings, bootstrap_servers(settings))


def acquire_broker(
    settings: Settings, *, data_dir: Path | None = None, port: int | None = None
) -> BrokerLease:
    """A broker for a test session or a benchmark, started if need be (see module docstring)."""
    if settings.bootstrap_servers:
        return BrokerLease(settings.bootstrap_servers, "MESH_BOOTSTRAP_SERVERS", lambda: None)
    if shutil.which("java"):
        broker = local_kafka(settings, port=port, data_dir=data_dir)
        was_running = broker.status().running
        status = broker.up()

        def release() -> None:
            if not was_running:  # leave a broker someone else started running
                broker.down()

        return BrokerLease(status.bootstrap or broker.bootstrap, "local jars", release)
    if _docker_engine_runs():
        return _testcontainers_broker()
    raise KafkaUnavailableError(
        "no broker: MESH_BOOTSTRAP_SERVERS is unset, java is not installed for the local broker "
        "and no Docker engine runs for testcontainers"
    )


def _docker_engine_runs() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "info"], capture_output=True, check=False)  # noqa: S603
    return probe.returncode == 0


def _testcontainers_broker() -> BrokerLease:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft()
    container.start()
    return BrokerLease(container.get_bootstrap_server(), "testcontainers", container.stop)
