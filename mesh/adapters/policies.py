"""Operator policies on ``mesh.policies.v1``: read them back, publish a new version.

Reading folds the topic exactly as sidecars do (:class:`~mesh.domain.policies.PolicyBook`):
only records signed by an operator count, and a version not newer than the one in force
changes nothing; what was ignored is kept with where it was and why. Publishing signs the
record with this host's operator key, under the next version of its target.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Message, Producer, TopicPartition

from mesh.adapters.kafka.config import producer_config
from mesh.adapters.kafka.reading import partitions_of, read_to_end, reader
from mesh.adapters.keyfiles import operator_key
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import MESH_SIGNER
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.policies import POLICY_SUBJECT, PolicyBook, PolicyInForce, canonical
from mesh.domain.topics import POLICIES
from mesh.errors import KafkaUnavailableError, MeshError
from mesh.settings import Cluster

__all__ = ["PolicyLog", "publish_policy", "read_policies"]


@dataclass
class PolicyLog:
    book: PolicyBook = field(default_factory=PolicyBook)
    history: list[tuple[int, PolicyInForce]] = field(default_factory=list)  # (at ms, record)
    ignored: list[str] = field(default_factory=list)


def read_policies(cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]) -> PolicyLog:
    """Every policy record, folded in order, checked against the operators among ``signers``."""
    operators = sorted(s for s in signers if s != MESH_SIGNER)
    log = PolicyLog()
    consumer = reader(cluster)
    topic = cluster.topic(POLICIES)
    try:
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(consumer, topic)]
        consumer.assign(tps)

        def fold(message: Message) -> None:
            where = f"{topic}[{message.partition()}]@{message.offset()}"
            try:
                opened = codec.open(message.value() or b"", verify=False)
                sender = opened.envelope.sender
                if opened.body_subject != POLICY_SUBJECT or sender not in operators:
                    raise MeshError(f"not a policy signed by an operator (from {sender!r})")
                opened.verify(signers[sender])
            except MeshError as exc:
                log.ignored.append(f"{where}: {exc}")
                return
            ignored = log.book.apply(opened.body, sender, operators)
            if ignored is not None:
                log.ignored.append(f"{where}: {ignored}")
                return
            target = str(opened.body["target"])
            log.history.append((message.timestamp()[1], log.book.targets[target]))

        read_to_end(consumer, [TopicPartition(t.topic, t.partition) for t in tps], fold)
    finally:
        consumer.close()
    return log


def publish_policy(
    cluster: Cluster,
    codec: MessageCodec,
    signers: Mapping[str, bytes],
    target: str,
    policy: Mapping[str, Any],
    reason: str,
) -> PolicyInForce:
    """Sign and publish ``policy`` as the next version for ``target``; returns it once read
    back in force."""
    key = operator_key(cluster.settings)
    version = read_policies(cluster, codec, signers).book.next_version(target)
    body = {
        "target": target,
        "version": version,
        "policy_json": canonical(policy),
        "reason": reason,
    }
    envelope = Envelope(
        message_id=str(uuid.uuid4()),
        conversation_id="policy",
        correlation_id=target,
        sender=key.agent_id,
        recipient_kind=RecipientKind.BROADCAST,
        recipient="",
        created_at_ms=int(time.time() * 1000),
    )
    value = codec.seal(envelope, POLICY_SUBJECT, body, key)
    producer = Producer(producer_config(cluster))
    failures: list[str] = []
    producer.produce(
        cluster.topic(POLICIES),
        value,
        target.encode(),
        on_delivery=lambda error, _m: failures.append(str(error)) if error else None,
    )
    if producer.flush(15) or failures:
        raise KafkaUnavailableError(
            f"the policy did not reach {cluster.topic(POLICIES)}: "
            f"{failures[0] if failures else 'timed out'}"
        )
    in_force = read_policies(cluster, codec, signers).book.targets.get(target)
    if in_force is None or in_force.version != version:
        raise MeshError(
            f"the policy for {target!r} was sent but is not in force (version {version}); is "
            f"{key.agent_id!r} among the trust anchors' operators (`mesh keys show`)?"
        )
    return in_force
