"""Every Kafka client configuration of the mesh, for both clients, in one place.

Why these settings:

* Producers are idempotent with ``acks=all``: a retry never duplicates or reorders a record.
* confluent-kafka uses ``partitioner=murmur2_random``, the Java client's partitioner, which is
  also aiokafka's default. librdkafka's own default (``consistent_random``, CRC32) would send
  the same key to a different partition from Python's two clients, breaking co-partitioning.
* Consumers read ``read_committed`` so aborted transactions of processors are never seen.
* Nothing relies on broker auto-create (``allow.auto.create.topics=false``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.helpers import create_ssl_context

from mesh.settings import Cluster, Settings

__all__ = [
    "aiokafka_consumer_config",
    "aiokafka_producer_config",
    "base_config",
    "consumer_config",
    "producer_config",
    "refusal",
    "transactional_producer_config",
]


#: librdkafka's own log lines go to Python logging under this name instead of raw stderr,
#: so a transient "coordinator load in progress" does not litter the CLI's output; configure
#: logging to see them.
LIBRDKAFKA_LOGGER = logging.getLogger("mesh.librdkafka")
LIBRDKAFKA_LOGGER.addHandler(logging.NullHandler())


class _Refusals(logging.Handler):
    """The last reason a broker refused a connection (bad SASL credentials, a TLS handshake
    that failed), read from librdkafka's log: a failed request only says "transport failure",
    which sends people looking for a broker that is up and refusing them."""

    MARKERS = ("SASL authentication error", "SSL handshake failed")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if any(marker in text for marker in self.MARKERS):
            self.last = text.rsplit("/bootstrap: ", 1)[-1]


_REFUSALS = _Refusals()
LIBRDKAFKA_LOGGER.addHandler(_REFUSALS)


def refusal(client: Any) -> str | None:
    """Why the brokers refused ``client`` (an AdminClient or a Producer), if they did: serves
    the client's queued log lines first (librdkafka hands them over on poll)."""
    _REFUSALS.last = None
    client.poll(0)
    return _REFUSALS.last


def base_config(cluster: Cluster) -> dict[str, Any]:
    return {
        "bootstrap.servers": cluster.bootstrap,
        "logger": LIBRDKAFKA_LOGGER,
        **cluster.settings.client_security(),
    }


def producer_config(cluster: Cluster, **extra: Any) -> dict[str, Any]:
    return {
        **base_config(cluster),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "message.max.bytes": cluster.settings.max_message_bytes + 64 * 1024,
        **extra,
    }


def transactional_producer_config(
    cluster: Cluster, transactional_id: str, **extra: Any
) -> dict[str, Any]:
    """A producer for exactly-once work; ``transactional_id`` must be stable per instance."""
    return producer_config(cluster, **{"transactional.id": transactional_id, **extra})


def consumer_config(cluster: Cluster, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **base_config(cluster),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        **extra,
    }


def aiokafka_producer_config(cluster: Cluster) -> dict[str, Any]:
    """Keyword arguments for ``aiokafka.AIOKafkaProducer`` (default partitioner: murmur2)."""
    settings = cluster.settings
    return {
        "bootstrap_servers": cluster.bootstrap,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 2,
        # aiokafka's default batch (16 KiB, ~30 mesh messages) fills under load and then every
        # send waits for the partition's batch in flight to drain; 256 KiB lets a busy sidecar
        # keep sending while one request is out.
        "max_batch_size": 256 * 1024,
        "max_request_size": settings.max_message_bytes + 64 * 1024,
        **_aiokafka_security(settings),
    }


def aiokafka_consumer_config(cluster: Cluster, group_id: str | None) -> dict[str, Any]:
    settings = cluster.settings
    return {
        "bootstrap_servers": cluster.bootstrap,
        "group_id": group_id,
        "isolation_level": "read_committed",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # aiokafka's default fetch wait (500 ms) would be the floor of every idle-to-busy
        # delivery: a halt or a message arriving on a quiet topic. 20 ms costs an idle
        # consumer about 50 empty fetches a second and keeps delivery in tens of ms.
        "fetch_max_wait_ms": 20,
        **_aiokafka_security(settings),
    }


def _aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The sidecar's client connects as every other client does: over TLS (verifying the
    brokers with ``MESH_SSL_CA_LOCATION``, presenting a client certificate for mTLS) and with
    SASL over TLS when the settings say so."""
    mapping: dict[str, Any] = {
        "security_protocol": settings.security_protocol,
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        mapping["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_ca_location,
            certfile=settings.ssl_certificate_location,
            keyfile=settings.ssl_key_location,
        )
    return {k: v for k, v in mapping.items() if v}
