"""The KPIs on the cluster: read what the ``kpis`` processor keeps on ``mesh.kpis.v1`` (its
pieces, per partition, added up), or fold the same facts again from the audit log's original
bytes (`mesh kpis --from-audit`), checked as the processor checks them: task events and
telemetry signed by the key the mesh vouched for at the time, halts by a control signer, drills
by an operator."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Message

from mesh.adapters.audit.log import AuditLog
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.kafka.table import TopicFold
from mesh.adapters.keyfiles import control_signers, mesh_anchor
from mesh.adapters.policies import operators_of
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.control import check_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.audit.chain import Link
from mesh.domain.drills import DRILL_SUBJECT
from mesh.domain.keys import KeyDirectory
from mesh.domain.kpis import KpiBook, KpiView, Totals, parse_piece_key
from mesh.domain.tasks import TASK_EVENT
from mesh.domain.telemetry import TELEMETRY_SUBJECT
from mesh.domain.topics import CONTROL, DRILLS, KPIS, TASKS, TELEMETRY
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["AuditFold", "KpiPieces", "kpis_from_audit", "read_kpis"]


class KpiPieces(TopicFold):
    """The processor's pieces on ``mesh.kpis.v1`` (per partition), latest first; :meth:`view`
    adds them up. Read once (:func:`read_kpis`) or followed (the console)."""

    def __init__(self, cluster: Cluster, serde: Serde) -> None:
        self.latest: dict[tuple[int, str], Totals | None] = {}
        self._serde = serde
        super().__init__(cluster, cluster.topic(KPIS))

    def _fold(self, message: Message) -> None:
        key = (message.key() or b"").decode()
        if parse_piece_key(key) is None:
            return  # a task's track
        value = message.value()
        at = (int(message.partition() or 0), key)
        if value is None:
            self.latest[at] = None
            return
        totals = self._serde.decode(value).record.get("totals")
        self.latest[at] = None if totals is None else Totals.from_record(totals)

    def view(self) -> KpiView:
        view = KpiView()
        for (_, key), totals in self.latest.items():
            parsed = parse_piece_key(key)
            if totals is not None and parsed is not None:
                view.add(*parsed, totals)
        return view


def read_kpis(cluster: Cluster, serde: Serde) -> KpiView:
    """The processor's totals, every partition's piece added up."""
    return KpiPieces(cluster, serde).read_once().view()


class AuditFold:
    """The KPI facts of audit links, checked and folded into a :class:`KpiBook`."""

    def __init__(self, cluster: Cluster, codec: MessageCodec, keys: KeyDirectory) -> None:
        self.book = KpiBook()
        self.skipped: list[str] = []
        self._codec, self._keys = codec, keys
        self._signers: Mapping[str, bytes] = control_signers(cluster.settings)
        self._operators = operators_of(self._signers)
        self._topics = {cluster.topic(t): t for t in (TASKS, TELEMETRY, CONTROL, DRILLS)}

    def link(self, link: Link) -> None:
        topic = self._topics.get(link.source_topic)
        if topic is None or link.original is None:
            return
        try:
            self._fold(topic, link.original)
        except MeshError as exc:
            where = f"{link.source_topic}[{link.source_partition}]@{link.source_offset}"
            self.skipped.append(f"{where}: {exc}")

    def _fold(self, topic: str, original: bytes) -> None:
        opened = self._codec.open(original, verify=False)
        envelope, body, at = opened.envelope, opened.body, opened.envelope.created_at_ms
        if topic == CONTROL:
            self.book.control(check_control(opened, self._signers).body, at)
            return
        if topic == DRILLS:
            if opened.body_subject != DRILL_SUBJECT or envelope.sender not in self._operators:
                raise MeshError(f"not a drill result signed by an operator ({envelope.sender!r})")
            opened.verify(self._signers[envelope.sender])
            self.book.drill(body)
            return
        if opened.body_subject not in (TASK_EVENT, TELEMETRY_SUBJECT):
            return
        opened.verify(self._keys.as_of(at).key_for(envelope.sender))
        if topic == TASKS:
            self.book.task_event(body, at)
        else:
            self.book.telemetry(envelope.sender, envelope.task_id, body, at)


def kpis_from_audit(cluster: Cluster, codec: MessageCodec) -> AuditFold:
    """Every KPI fact the audit log recorded, folded again from the original bytes."""
    keys = read_keys(cluster, codec.serde, mesh_anchor(cluster.settings))
    fold = AuditFold(cluster, codec, keys)
    log = AuditLog(cluster, codec.serde)
    for partition in log.partitions():
        for entry in log.entries(partition):
            if entry.link is not None:
                fold.link(entry.link)
    return fold
