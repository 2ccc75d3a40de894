"""The local Kafka that ``mesh kafka up`` and the test suite start: one broker, or a cluster."""

from pathlib import Path
from typing import overload

from mesh.adapters.localkafka.broker import BrokerStatus, LocalKafka
from mesh.adapters.localkafka.cluster import LocalCluster, recorded_cluster
from mesh.adapters.localkafka.jars import ensure_jars

__all__ = [
    "BrokerStatus",
    "LocalCluster",
    "LocalKafka",
    "ensure_jars",
    "local_cluster",
    "local_kafka",
]

from mesh.settings import Settings


def local_kafka(
    settings: Settings,
    *,
    port: int | None = None,
    data_dir: Path | None = None,
    tls: bool = False,
    secure: bool = False,
) -> LocalKafka:
    """The local broker the settings describe (options override them)."""
    return LocalKafka(
        data_dir or settings.state_dir / "kafka",
        port or settings.kafka_port,
        version=settings.kafka_version,
        heap=settings.kafka_heap,
        tls=tls,
        secure=secure,
    )


@overload
def local_cluster(
    settings: Settings, size: int, *, port: int | None = None, data_dir: Path | None = None
) -> LocalCluster: ...
@overload
def local_cluster(
    settings: Settings, size: None, *, port: int | None = None, data_dir: Path | None = None
) -> LocalCluster | None: ...
def local_cluster(
    settings: Settings, size: int | None, *, port: int | None = None, data_dir: Path | None = None
) -> LocalCluster | None:
    """The local cluster of ``size`` nodes (in ``<state dir>/kafka-cluster`` unless
    ``data_dir``); with ``size`` None, the one recorded there (None if there is none)."""
    directory = data_dir or settings.state_dir / "kafka-cluster"
    if size is None:
        recorded = recorded_cluster(directory)
        if recorded is None:
            return None
        size, port = recorded
    return LocalCluster(
        directory,
        port or settings.kafka_port,
        size,
        version=settings.kafka_version,
        heap=settings.kafka_heap,
    )
