"""Drill results on ``mesh.drills.v1``: publish one (signed with this host's operator key),
read the last per canary back (only operator-signed records count)."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Message

from mesh.adapters.kafka.producing import produce_one
from mesh.adapters.kafka.table import TopicFold
from mesh.adapters.keyfiles import operator_key
from mesh.adapters.policies import operators_of
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.drills import DRILL_SUBJECT, DrillResult
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.topics import DRILLS
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["publish_drill", "read_drills"]


def publish_drill(cluster: Cluster, codec: MessageCodec, result: DrillResult) -> None:
    key = operator_key(cluster.settings)
    envelope = new_envelope(
        key.agent_id, "", recipient_kind=RecipientKind.BROADCAST, conversation_id="drill"
    )
    value = codec.seal(envelope, DRILL_SUBJECT, result.to_record(), key)
    produce_one(cluster, cluster.topic(DRILLS), result.canary, value, "the drill result")


class _DrillTable(TopicFold):
    def __init__(self, cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]) -> None:
        self.last: dict[str, DrillResult] = {}
        self.ignored: list[str] = []
        self._codec, self._signers = codec, dict(signers)
        super().__init__(cluster, cluster.topic(DRILLS))

    def _fold(self, message: Message) -> None:
        try:
            opened = self._codec.open(message.value() or b"", verify=False)
            sender = opened.envelope.sender
            if opened.body_subject != DRILL_SUBJECT or sender not in operators_of(self._signers):
                raise MeshError(f"not a drill result signed by an operator (from {sender!r})")
            opened.verify(self._signers[sender])
        except MeshError as exc:
            self.ignored.append(f"{self.topic}[{message.partition()}]@{message.offset()}: {exc}")
            return
        result = DrillResult.from_record(dict(opened.body))
        self.last[result.canary] = result


def read_drills(
    cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]
) -> dict[str, DrillResult]:
    """The last drill of each canary, from records an operator among ``signers`` signed."""
    return _DrillTable(cluster, codec, signers).read_once().last
