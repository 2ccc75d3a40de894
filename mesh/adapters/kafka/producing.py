"""One record produced and confirmed: what an operator command sends (a halt, a key
revocation, a policy). Idempotent producer, ``acks=all``; the call returns once the broker has
the record, or raises KafkaUnavailableError saying which topic it did not reach."""

from __future__ import annotations

from confluent_kafka import Producer

from mesh.adapters.kafka.config import producer_config
from mesh.errors import KafkaUnavailableError
from mesh.settings import Cluster

__all__ = ["produce_one"]


def produce_one(
    cluster: Cluster,
    topic: str,
    key: str,
    value: bytes,
    what: str,
    producer: Producer | None = None,
) -> None:
    """Produce ``value`` under ``key`` to ``topic`` (its full name) and wait for the broker;
    ``what`` names the record in the error ("the command", "the policy"). A one-shot command
    makes its own producer; a caller that produces again and again passes its own (a new
    idempotent producer costs a connection and a producer id, about half a second here)."""
    producer = producer or Producer(producer_config(cluster))
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer.produce(topic, value, key.encode(), on_delivery=delivered)
    if producer.flush(15) or failures:
        raise KafkaUnavailableError(
            f"{what} did not reach {topic}: {failures[0] if failures else 'timed out'}; is the "
            "broker up and the topic created?"
        )
