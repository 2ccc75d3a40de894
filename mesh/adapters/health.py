"""The mesh's health and its recent dead letters, as the console shows them (one-shot reads).

* :func:`dead_letters`: the newest records of ``mesh.dlq.v1`` across its partitions: what
  was refused, why, from where, and the original bytes.
* :func:`health`: the broker (its nodes, the mesh's topics), the schema registry (subjects),
  each processor's consumer group (records behind the ends of its inputs, from committed
  offsets) and the last scheduled drill.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from mesh.adapters.drills import read_drills
from mesh.adapters.kafka.config import base_config
from mesh.adapters.kafka.reading import newest_first, partitions_of, reader, watermarks
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.drills import CANARY, drill_health
from mesh.domain.topics import DLQ, catalogue
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = [
    "PROCESSOR_GROUPS",
    "dead_letter_ends",
    "dead_letters",
    "health",
    "processor_metrics",
]

#: The processors `mesh up` runs, by the name their consumer group is made from.
PROCESSOR_GROUPS = ("registry", "state", "audit", "killswitch", "kpis")


def dead_letters(
    cluster: Cluster, codec: MessageCodec, limit: int = 100, consumer: Consumer | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters, newest first (read with ``consumer``, a
    :func:`reader` kept by the caller, or a reader of its own)."""
    own = consumer is None
    consumer = consumer or reader(cluster)
    topic = cluster.topic(DLQ)
    found: list[dict[str, Any]] = []
    try:
        for partition in partitions_of(consumer, topic):
            for n, message in enumerate(newest_first(consumer, topic, partition)):
                if n >= limit:
                    break
                found.append(_letter(codec, partition, message.offset() or 0, message.value()))
    finally:
        if own:
            consumer.close()
    found.sort(key=lambda d: d.get("detected_at") or 0, reverse=True)
    return found[:limit]


def dead_letter_ends(cluster: Cluster, consumer: Consumer) -> tuple[int, ...]:
    """The end offset of every partition of ``mesh.dlq.v1``: unchanged, no new dead letter."""
    topic = cluster.topic(DLQ)
    return tuple(
        watermarks(consumer, TopicPartition(topic, p))[1] for p in partitions_of(consumer, topic)
    )


def _letter(
    codec: MessageCodec, partition: int, offset: int, value: bytes | None
) -> dict[str, Any]:
    where = {"dlq": f"{partition}@{offset}"}
    try:
        record = codec.serde.decode(value or b"").record
    except MeshError as exc:
        return {**where, "reason_code": "unreadable", "reason": str(exc)}
    original = bytes(record.get("original") or b"")
    return {
        **where,
        "reason_code": record["reason_code"],
        "reason": record["reason"],
        "source": f"{record['source_topic']}[{record['source_partition']}]"
        f"@{record['source_offset']}",
        "detected_by": record.get("detected_by"),
        "detected_at": record.get("detected_at"),
        "size": len(original),
        "original_base64": base64.b64encode(original).decode(),
    }


def health(cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]) -> dict[str, Any]:
    """What is up, and how far behind: broker, topics, registry, processors, drill."""
    admin = AdminClient(base_config(cluster))
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        return {"broker": {"up": False, "error": str(exc)}}
    names = {cluster.topic(spec.name) for spec in catalogue()}
    topics = {n: len(t.partitions) for n, t in metadata.topics.items() if n in names}
    last = read_drills(cluster, codec, signers).get(CANARY)
    drill_ok, drill = drill_health(last, _now_ms())
    return {
        "broker": {
            "up": True,
            "nodes": sorted(f"{b.id} {b.host}:{b.port}" for b in metadata.brokers.values()),
            "controller": metadata.controller_id,
        },
        "topics": {
            "present": len(topics),
            "expected": len(names),
            "missing": sorted(names - set(topics)),
        },
        "schema_registry": {"subjects": len(codec.serde.registry.subjects())},
        "processors": {name: _behind(cluster, admin, name) for name in PROCESSOR_GROUPS},
        "drill": {"healthy": drill_ok, "summary": drill},
    }


def _behind(cluster: Cluster, admin: AdminClient, name: str) -> dict[str, Any]:
    """The group's offsets behind the ends of what it committed on (None: never committed),
    the sum of its committed offsets (two reads apart give its throughput), and its members
    (the running instances) with the group's state."""
    group = cluster.topic(f"mesh-{name}")
    try:
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        partitions = result[group].result().topic_partitions
        described = admin.describe_consumer_groups([group])[group].result()
    except KafkaException as exc:
        return {"error": str(exc)}
    members = {"instances": len(described.members), "state": str(described.state.name)}
    committed = [tp for tp in partitions if tp.offset >= 0]
    if not committed:
        return {"offsets_behind": None, "partitions": 0, "committed": 0, **members}
    probe = reader(cluster)
    try:
        behind = sum(
            max(0, watermarks(probe, TopicPartition(tp.topic, tp.partition))[1] - tp.offset)
            for tp in committed
        )
    finally:
        probe.close()
    return {
        "offsets_behind": behind,
        "partitions": len(committed),
        "committed": sum(tp.offset for tp in committed),
        **members,
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


#: From each processor's own Prometheus metrics: what the console's health view shows.
_RESTORES = {
    "mesh_processor_restored_records_total": "restored_records",
    "mesh_processor_restore_seconds_total": "restore_seconds",
    "mesh_processor_assignments_total": "assignments",
    "mesh_processor_restarts_total": "restarts",
    "mesh_processor_records_in_total": "records_in",
    "mesh_processor_ready": "ready",
}


def processor_metrics(urls: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Restores, restarts and readiness per processor, scraped from the processors'
    ``/metrics`` (``mesh processors run --metrics-port``) with Prometheus' own parser; a URL
    that does not answer is reported under ``_unreachable`` rather than raised."""
    found: dict[str, dict[str, Any]] = {}
    for url in urls:
        try:
            answer = httpx.get(url, timeout=2.0)
            answer.raise_for_status()
            families = list(text_string_to_metric_families(answer.text))
        except (httpx.HTTPError, ValueError) as exc:
            found.setdefault("_unreachable", {})[url] = str(exc) or type(exc).__name__
            continue
        for family in families:
            for sample in family.samples:
                name, processor = _RESTORES.get(sample.name), sample.labels.get("processor")
                if name and processor:
                    found.setdefault(processor, {})[name] = sample.value
    return found
