"""One record produced and confirmed: what an operator command sends (a halt, a key
revocation, a policy). ``acks=all``; the call returns once the broker has the record, or raises
KafkaUnavailableError saying which topic it did not reach.

The producer a one-shot call makes is idempotent unless the caller says the record may land
twice (``repeatable``). A new idempotent producer first gets a producer id from the broker,
which took about half a second on every call in ``bench/halt_cli.py`` (a plain producer's
whole produce: 3 ms). A halt must not wait for that. A signed
control command is repeatable: a single record cannot be reordered, and a second copy of the
same signed command acts once (the same halt again is applied once; a resume again finds
nothing left to lift, and the kill-switch dead-letters it as a command that changed nothing).
"""

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
    repeatable: bool = False,
) -> None:
    """Produce ``value`` under ``key`` to ``topic`` (its full name) and wait for the broker;
    ``what`` names the record in the error ("the command", "the policy"). A one-shot command
    makes its own producer; a caller that produces again and again passes its own (a new
    idempotent producer costs a connection and a producer id, about half a second here).
    ``repeatable``: the record may land twice, so a one-shot producer needs no producer id."""
    producer = producer or Producer(
        producer_config(cluster, **{"enable.idempotence": not repeatable})
    )
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
