"""Operator policies on ``mesh.policies.v1``: read them back, publish a new version.

Reading folds the topic exactly as sidecars do (:class:`~mesh.domain.policies.PolicyBook`):
only records signed by an operator count, and a version not newer than the one in force
changes nothing; what was ignored is kept with where it was and why. Publishing signs the
record with this host's operator key, under the next version of its target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from mesh.adapters.kafka.producing import produce_one
from mesh.adapters.kafka.table import TopicFold
from mesh.adapters.keyfiles import operator_key
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import MESH_SIGNER
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.policies import POLICY_SUBJECT, PolicyBook, PolicyInForce, canonical
from mesh.domain.topics import POLICIES
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["PolicyLog", "fold_policy", "operators_of", "publish_policy", "read_policies"]


@dataclass
class PolicyLog:
    book: PolicyBook = field(default_factory=PolicyBook)
    history: list[tuple[int, PolicyInForce]] = field(default_factory=list)  # (at ms, record)
    ignored: list[str] = field(default_factory=list)


def operators_of(signers: Mapping[str, bytes]) -> list[str]:
    """The operators among the trust anchors: every signer but the mesh itself."""
    return sorted(s for s in signers if s != MESH_SIGNER)


def fold_policy(
    book: PolicyBook, codec: MessageCodec, value: bytes | None, signers: Mapping[str, bytes]
) -> PolicyInForce | str:
    """Fold one record of ``mesh.policies.v1`` into ``book`` as every reader does (a sidecar,
    `mesh policy`): the policy now in force for its target, or why the record changed nothing
    (not a policy, not signed by an operator, a forged signature, an older version)."""
    operators = operators_of(signers)
    try:
        opened = codec.open(value or b"", verify=False)
        sender = opened.envelope.sender
        if opened.body_subject != POLICY_SUBJECT or sender not in operators:
            raise MeshError(f"not a policy signed by an operator (from {sender!r})")
        opened.verify(signers[sender])
    except MeshError as exc:
        return str(exc)
    ignored = book.apply(opened.body, sender, operators)
    return ignored if ignored is not None else book.targets[str(opened.body["target"])]


class _PolicyTable(TopicFold):
    def __init__(self, cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]) -> None:
        self.log = PolicyLog()
        self._codec, self._signers = codec, dict(signers)
        super().__init__(cluster, cluster.topic(POLICIES))

    def _fold(self, message: Message) -> None:
        folded = fold_policy(self.log.book, self._codec, message.value(), self._signers)
        if isinstance(folded, str):
            where = f"{self.topic}[{message.partition()}]@{message.offset()}"
            self.log.ignored.append(f"{where}: {folded}")
            return
        self.log.history.append((message.timestamp()[1], folded))


def read_policies(cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]) -> PolicyLog:
    """Every policy record, folded in order, checked against the operators among ``signers``."""
    return _PolicyTable(cluster, codec, signers).read_once().log


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
    envelope = new_envelope(
        key.agent_id, "", recipient_kind=RecipientKind.BROADCAST, conversation_id="policy"
    )
    value = codec.seal(envelope, POLICY_SUBJECT, body, key)
    produce_one(cluster, cluster.topic(POLICIES), target, value, "the policy")
    in_force = read_policies(cluster, codec, signers).book.targets.get(target)
    if in_force is None or in_force.version != version:
        raise MeshError(
            f"the policy for {target!r} was sent but is not in force (version {version}); is "
            f"{key.agent_id!r} among the trust anchors' operators (`mesh keys show`)?"
        )
    return in_force
