"""Approvals on ``mesh.approvals.v1``: fold them as every reader does, read them back, and
publish an operator's decision (mesh.domain.approvals).

Signatures: a request must verify with the agent's key as the mesh countersigned it (the key
directory), a decision with an operator's key among the trust anchors. A use only ever takes an
approval away, so it is folded whatever signed it: at worst a forged use spends an approval,
never grants one (and a use signed before the agent's key rotated still counts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Message

from mesh.adapters.kafka.keys import KeyTable, read_keys
from mesh.adapters.kafka.producing import produce_one
from mesh.adapters.kafka.table import TopicFold
from mesh.adapters.keyfiles import mesh_anchor, operator_key
from mesh.adapters.policies import operators_of
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.approvals import APPROVAL_SUBJECT, ApprovalBook, ApprovalKind, Request
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.topics import APPROVALS
from mesh.errors import MeshError, UnknownTargetError
from mesh.settings import Cluster

__all__ = ["ApprovalFollower", "ApprovalLog", "decide", "fold_approval", "read_approvals"]

#: The key an agent signed with at a time (agent id, epoch ms): history is judged by the key
#: in force when it was written, so a request stays verifiable after the agent retires.
AgentKeys = Callable[[str, int], bytes]


@dataclass
class ApprovalLog:
    book: ApprovalBook = field(default_factory=ApprovalBook)
    ignored: list[str] = field(default_factory=list)


def fold_approval(
    book: ApprovalBook,
    codec: MessageCodec,
    value: bytes | None,
    signers: Mapping[str, bytes],
    agent_key: AgentKeys,
    at_ms: int,
) -> str | None:
    """Fold one record into ``book``; returns why it changed nothing (None: it counted)."""
    operators = operators_of(signers)
    try:
        opened = codec.open(value or b"", verify=False)
        sender = opened.envelope.sender
        if opened.body_subject != APPROVAL_SUBJECT:
            raise MeshError(f"not an approval step ({opened.body_subject})")
        if opened.body["kind"] != ApprovalKind.USED:
            opened.verify(signers[sender] if sender in operators else agent_key(sender, at_ms))
    except MeshError as exc:
        return str(exc)
    return book.apply(opened.body, sender, operators, at_ms)


class _ApprovalTable(TopicFold):
    def __init__(
        self,
        cluster: Cluster,
        codec: MessageCodec,
        signers: Mapping[str, bytes],
        agent_key: AgentKeys,
    ) -> None:
        self.log = ApprovalLog()
        self._codec, self._signers, self._agent_key = codec, dict(signers), agent_key
        super().__init__(cluster, cluster.topic(APPROVALS))

    def _fold(self, message: Message) -> None:
        at_ms = message.timestamp()[1]
        why = fold_approval(
            self.log.book, self._codec, message.value(), self._signers, self._agent_key, at_ms
        )
        if why is not None:
            where = f"{self.topic}[{message.partition()}]@{message.offset()}"
            self.log.ignored.append(f"{where}: {why}")


def read_approvals(
    cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]
) -> ApprovalLog:
    """Every approval step, folded in order (agents' keys from the key directory)."""
    keys = read_keys(cluster, codec.serde, mesh_anchor(cluster.settings))
    table = _ApprovalTable(cluster, codec, signers, lambda a, at: keys.as_of(at).key_for(a))
    return table.read_once().log


class ApprovalFollower:
    """The approvals topic followed, with the key directory it is judged by (the console's
    decisions waiting for a person): :meth:`poll` folds what arrived, keys first."""

    def __init__(self, cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]):
        self._keys = KeyTable(cluster, codec.serde, mesh_anchor(cluster.settings))
        try:
            self._table = _ApprovalTable(
                cluster, codec, signers, lambda a, at: self._keys.directory.as_of(at).key_for(a)
            )
        except MeshError:
            self._keys.close()
            raise

    @property
    def log(self) -> ApprovalLog:
        return self._table.log

    def catch_up(self) -> None:
        self._keys.catch_up()
        self._table.catch_up()

    def poll(self) -> None:
        self._keys.poll()
        self._table.poll()

    def close(self) -> None:
        self._keys.close()
        self._table.close()


def decide(
    cluster: Cluster,
    codec: MessageCodec,
    signers: Mapping[str, bytes],
    request_id: str,
    approve: bool,
    note: str,
    ttl_s: float,
) -> Request:
    """Sign and publish this host's operator's decision on ``request_id``, bound to the exact
    call requested; returns the request as decided, once read back."""
    log = read_approvals(cluster, codec, signers)
    held = log.book.requests.get(request_id)
    if held is None:
        raise UnknownTargetError(
            f"no approval request {request_id!r}; `mesh approvals ls` lists the pending ones"
        )
    now_ms = int(time.time() * 1000)
    state = held.state(now_ms)
    if state != "pending":
        raise UnknownTargetError(f"request {request_id} is {state}; only a pending one is decided")
    key = operator_key(cluster.settings)
    kind = ApprovalKind.APPROVED if approve else ApprovalKind.REJECTED
    body = {
        "kind": kind.value,
        "request_id": request_id,
        "agent_id": held.agent_id,
        "tool": held.tool,
        "arguments_json": None,
        "arguments_digest": held.arguments_digest,
        "cost_usd": held.cost_usd,
        "correlation_id": held.correlation_id,
        "expires_at": now_ms + int(ttl_s * 1000),
        "actor": key.agent_id,
        "note": note,
        "policy_hash": None,
    }
    envelope = new_envelope(key.agent_id, "", recipient_kind=RecipientKind.BROADCAST)
    value = codec.seal(envelope, APPROVAL_SUBJECT, body, key)
    produce_one(cluster, cluster.topic(APPROVALS), request_id, value, "the decision")
    decided = read_approvals(cluster, codec, signers).book.requests.get(request_id)
    if decided is None or decided.decision != kind.value:
        raise MeshError(
            f"the decision on {request_id} was sent but is not in force; is {key.agent_id!r} "
            "among the trust anchors' operators (`mesh keys show`)?"
        )
    return decided
