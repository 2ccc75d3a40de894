"""What a compliance report states about a window, read from the mesh in one pass over the
audit log (`mesh report`): every claim carries the audit coordinates (audit partition and
sequence) of the record it rests on, so an auditor can find it (`mesh audit replay`) and the
chain that vouches for it (`mesh audit verify`).

One pass per audit partition feeds the chain verification and collects, from the original
bytes of the links in the window: certifications and refused certifications, halts, human
approvals and escalations, drills, refusals by rule and policy, and the KPI facts (folded as
`mesh kpis --from-audit` does). Around it: the current registry (the inventory), the audit
topic's configuration, and the signed checkpoint that seals each partition's last link in
the window.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mesh.adapters.audit.log import AuditLog, Window
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.keyfiles import mesh_anchor, operator_key
from mesh.adapters.kpis import AuditFold
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import CERTIFIED_SUBJECT, AgentState
from mesh.domain.approvals import APPROVAL_SUBJECT
from mesh.domain.audit.chain import Checkpoint, Link
from mesh.domain.audit.verify import Entry, PartitionResult, verify_partition
from mesh.domain.drills import DRILL_SUBJECT
from mesh.domain.topics import APPROVALS, AUDIT, CONTROL, DRILLS, REGISTRY_EVENTS, TELEMETRY
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["Item", "ReportData", "gather_report"]


@dataclass(frozen=True, slots=True)
class Item:
    """One recorded fact: who signed it, what it said, and where the audit holds it."""

    audit_partition: int
    sequence: int
    source: str  # topic[partition]@offset
    at_ms: int
    signer: str
    body: dict[str, Any]

    @property
    def coordinates(self) -> str:
        return f"audit {self.audit_partition}#{self.sequence}"


@dataclass
class ReportData:
    window: Window
    generated_at_ms: int
    generated_by: str
    agents: dict[str, AgentState]
    audit_configs: dict[str, str]
    certifications: list[Item] = field(default_factory=list)
    halts: list[Item] = field(default_factory=list)
    approvals: list[Item] = field(default_factory=list)
    drills: list[Item] = field(default_factory=list)
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, policy hash)
    refusal_example: dict[tuple[str, str], Item] = field(default_factory=dict)
    records: int = 0
    verification: list[PartitionResult] = field(default_factory=list)
    seals: dict[int, Checkpoint | None] = field(default_factory=dict)
    kpis: AuditFold | None = None
    undecodable: list[str] = field(default_factory=list)


def gather_report(cluster: Cluster, codec: MessageCodec, window: Window, now_ms: int) -> ReportData:
    log = AuditLog(cluster, codec.serde)
    audit = cluster.topic(AUDIT)
    data = ReportData(
        window=window,
        generated_at_ms=now_ms,
        generated_by=operator_key(cluster.settings).agent_id,
        agents=read_agents(cluster, codec.serde),
        audit_configs=TopicAdmin(cluster).topic_configs([audit]).get(audit, {}),
    )
    keys = read_keys(cluster, codec.serde, mesh_anchor(cluster.settings))
    data.kpis = AuditFold(cluster, codec, keys)
    collect = _Collector(cluster, codec, data)
    for partition in log.partitions():
        checkpoints = log.checkpoints(partition)
        result = verify_partition(
            partition,
            collect.tap(log.entries(partition, window)),
            checkpoints,
            mesh_anchor(cluster.settings),
            from_start=window.from_ms is None,
            complete=window.to_ms is None,
        )
        data.verification.append(result)
        last = collect.last_sequence.get(partition)
        data.seals[partition] = _seal(checkpoints, last)
    return data


def _seal(checkpoints: list[Checkpoint], last_sequence: int | None) -> Checkpoint | None:
    """The first signed checkpoint at or after the window's last link of the partition."""
    if last_sequence is None:
        return None
    after = [c for c in checkpoints if c.sequence >= last_sequence]
    return min(after, key=lambda c: c.sequence, default=None)


class _Collector:
    def __init__(self, cluster: Cluster, codec: MessageCodec, data: ReportData) -> None:
        self.codec, self.data = codec, data
        self.topics = {
            cluster.topic(t): t for t in (REGISTRY_EVENTS, CONTROL, APPROVALS, DRILLS, TELEMETRY)
        }
        self.last_sequence: dict[int, int] = {}

    def tap(self, entries: Iterator[Entry]) -> Iterator[Entry]:
        for entry in entries:
            if entry.link is not None:
                self._link(entry.link)
            yield entry

    def _link(self, link: Link) -> None:
        self.data.records += 1
        self.last_sequence[link.audit_partition] = link.sequence
        if self.data.kpis is not None:
            self.data.kpis.link(link)
        topic = self.topics.get(link.source_topic)
        if topic is None or link.original is None:
            return
        try:
            opened = self.codec.open(link.original, verify=False)
        except MeshError as exc:
            self.data.undecodable.append(f"audit {link.audit_partition}#{link.sequence}: {exc}")
            return
        item = Item(
            link.audit_partition, link.sequence,
            f"{link.source_topic}[{link.source_partition}]@{link.source_offset}",
            opened.envelope.created_at_ms, opened.envelope.sender, dict(opened.body),
        )  # fmt: skip
        self._place(topic, opened.body_subject, item)

    def _place(self, topic: str, subject: str, item: Item) -> None:
        body = item.body
        if topic == REGISTRY_EVENTS and subject == CERTIFIED_SUBJECT:
            self.data.certifications.append(item)
        elif topic == CONTROL and body.get("action") == "HALT":
            self.data.halts.append(item)
        elif topic == APPROVALS and subject == APPROVAL_SUBJECT:
            self.data.approvals.append(item)
        elif topic == DRILLS and subject == DRILL_SUBJECT:
            self.data.drills.append(item)
        elif topic == TELEMETRY and body.get("kind") == "SEND_REFUSED":
            rule = str(body.get("rule") or body.get("name"))
            key = (rule, str(body.get("policy_hash") or "-"))
            self.data.refusals[key] += 1
            self.data.refusal_example.setdefault(key, item)


def gates_of(item: Item) -> list[dict[str, Any]]:
    """The gate results a certification record carries."""
    return list(json.loads(item.body.get("gates_json") or "[]"))
