"""`mesh tail`: the records of one mesh topic, decoded and checked, to look at by hand.

A record is shown as a :class:`Seen`: where it is, when it was written, its envelope and body
when it is one, and whether it verifies: a signed envelope against the key directory (or, on
the control topic, against the control signers), a dead letter with its reason, anything else
as undecodable. Reading starts ``last`` records before each partition's end and, with
``follow``, goes on as records arrive.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message, TopicPartition

from mesh.adapters.kafka.reading import partitions_of, read_to_end, reader, watermarks
from mesh.adapters.serde.control import check_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.keys import KeyDirectory
from mesh.domain.topics import CONTROL, DLQ, catalogue, inbox_topic
from mesh.errors import ConfigError, MeshError
from mesh.settings import Cluster

__all__ = ["Seen", "resolve_topic", "tail"]

_ALIASES = {spec.name.removeprefix("mesh.").removesuffix(".v1"): spec.name for spec in catalogue()}
_ALIASES |= {"control": CONTROL, "registry-events": "mesh.registry.events.v1"}


def resolve_topic(name: str) -> str:
    """The catalogue name of ``name``: a catalogue name, an alias (``telemetry``, ``control``,
    ``dlq``, ``registry-events``, ...) or ``inbox.AGENT``."""
    if name.startswith("inbox."):
        return inbox_topic(name.removeprefix("inbox.")).name
    known = {spec.name for spec in catalogue()}
    if name in known or name.startswith("mesh.inbox."):
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise ConfigError(
        f"no mesh topic {name!r}; use a catalogue name, inbox.AGENT or one of: "
        f"{', '.join(sorted(_ALIASES))}"
    )


@dataclass
class Seen:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str
    verified: bool | None = None  # None: nothing to verify (a dead letter, a registry record)
    problem: str = ""
    view: dict[str, Any] = field(default_factory=dict)

    @property
    def at(self) -> str:
        moment = dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "where": f"{self.topic}[{self.partition}]@{self.offset}",
            "key": self.key,
            "verified": self.verified,
            "problem": self.problem or None,
            **self.view,
        }


def tail(
    cluster: Cluster,
    topic: str,
    codec: MessageCodec,
    keys: KeyDirectory,
    signers: Mapping[str, bytes],
    last: int,
    follow: Callable[[], bool] | None = None,
) -> Iterator[Seen]:
    """The last ``last`` records of each partition of ``topic`` (catalogue name), in time
    order, then (while ``follow()``) each new one as it arrives."""
    full = cluster.topic(topic)
    consumer = reader(cluster)
    try:
        tps = []
        for partition in partitions_of(consumer, full):
            low, high = watermarks(consumer, TopicPartition(full, partition))
            tps.append(TopicPartition(full, partition, max(low, high - last)))
        consumer.assign(tps)
        found: list[Message] = []
        read_to_end(consumer, [TopicPartition(t.topic, t.partition) for t in tps], found.append)
        found.sort(key=lambda m: (m.timestamp()[1], m.partition() or 0, m.offset() or 0))
        for message in found:
            yield _seen(message, topic, codec, keys, signers)
        while follow is not None and follow():
            arrived = consumer.poll(0.5)
            if arrived is not None and arrived.error() is None:
                yield _seen(arrived, topic, codec, keys, signers)
    finally:
        consumer.close()


def _seen(
    message: Message,
    topic: str,
    codec: MessageCodec,
    keys: KeyDirectory,
    signers: Mapping[str, bytes],
) -> Seen:
    seen = Seen(
        topic,
        message.partition() or 0,
        message.offset() or 0,
        message.timestamp()[1],
        (message.key() or b"").decode(errors="replace"),
    )
    value = message.value()
    if value is None:
        seen.problem = "a tombstone"
        return seen
    if topic == DLQ:
        return _dead_letter(seen, codec, value)
    try:
        opened = codec.open(value, verify=False)
    except MeshError as exc:
        seen.verified, seen.problem = False, f"not a mesh message: {exc}"
        return seen
    envelope = opened.envelope
    seen.view = {
        "sender": envelope.sender,
        "recipient": envelope.recipient,
        "task_id": envelope.task_id,
        "message_id": envelope.message_id,
        "subject": opened.body_subject,
        "body": {k: v.hex() if isinstance(v, bytes) else v for k, v in opened.body.items()},
    }
    try:
        if topic == CONTROL:
            check_control(opened, signers)
        else:
            opened.verify(keys.key_for(envelope.sender))
        seen.verified = True
    except MeshError as exc:
        seen.verified, seen.problem = False, str(exc)
    return seen


def _dead_letter(seen: Seen, codec: MessageCodec, value: bytes) -> Seen:
    try:
        record = codec.serde.decode(value).record
    except MeshError as exc:
        seen.problem = f"not a dead letter: {exc}"
        return seen
    seen.view = {
        "reason_code": record.get("reason_code"),
        "reason": record.get("reason"),
        "source": f"{record.get('source_topic')}[{record.get('source_partition')}]@"
        f"{record.get('source_offset')}",
        "detected_by": record.get("detected_by"),
    }
    return seen
