"""The local single-node Kafka that ``mesh kafka up`` and the test suite start."""

from mesh.adapters.localkafka.broker import BrokerStatus, LocalKafka
from mesh.adapters.localkafka.jars import ensure_jars

__all__ = ["BrokerStatus", "LocalKafka", "ensure_jars", "local_kafka"]

from pathlib import Path

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
