"""Rebuild one task's state from the log, as it was at a point in time (time travel).

Time travel folds exactly what the live projection folds, through the same code: every record
of the task on ``mesh.tasks.v1`` *and* on every agent inbox (the processor's inputs, on the
partition the task id hashes to), in log-time order, handed to :class:`StateProcessor` by the
runtime's own :class:`~processors.runtime.core.Core`. What the processor refuses live is
refused here too and counted as skipped.

Senders are judged against the key directory as it was when they wrote (the keys the mesh
vouched for then, :meth:`~mesh.domain.keys.KeyDirectory.as_of`): an agent that has retired or
rotated its key since (every agent of a finished demo) still verifies for what it signed
before, and not for anything after.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mesh.adapters.kafka.partitioning import partition_for
from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.keys import KeyDirectory
from mesh.domain.tasks import TaskState
from mesh.domain.topics import INBOX_PATTERN, TASKS
from mesh.errors import TopicNotFoundError
from mesh.settings import Cluster
from processors.runtime.core import Core, SourceRecord
from processors.runtime.tables import AgentsView, StaticTables
from processors.state.processor import StateProcessor

__all__ = ["HistoricTables", "rebuild_task"]


class HistoricTables(StaticTables):
    """The registry and the key directory as of ``at_ms``: a retired agent counts as
    registered before it retired, and its key is the one the mesh vouched for then."""

    def __init__(self, agents: Mapping[str, AgentState], keys: KeyDirectory) -> None:
        super().__init__(agents)
        self.history = keys
        self.at_ms = 0

    def view(self, may_be_behind: bool = True) -> AgentsView:
        then = {
            agent_id: _unretired(agent) if self._retired_after(agent) else agent
            for agent_id, agent in self.agents.items()
        }
        return AgentsView(then, False, self.history.as_of(self.at_ms))

    def _retired_after(self, agent: AgentState) -> bool:
        return agent.status is AgentStatus.RETIRED and agent.updated_at_ms >= self.at_ms


def _unretired(agent: AgentState) -> AgentState:
    return replace(agent, status=AgentStatus.LIVE)


def rebuild_task(
    cluster: Cluster,
    codec: MessageCodec,
    agents: Mapping[str, AgentState],
    keys: KeyDirectory,
    task_id: str,
    as_of_ms: int | None = None,
) -> tuple[TaskState | None, int]:
    """Fold the task's records appended up to ``as_of_ms`` (log time); returns (state, skipped)."""
    records = _task_records(cluster, task_id, as_of_ms)
    tables = HistoricTables(agents, keys)
    core: Core[TaskState] = Core(StateProcessor(), codec, cluster.prefix, "rebuild", tables)
    skipped = 0
    for record in records:
        tables.at_ms = record.timestamp_ms
        before = core.dead_letters
        core.handle(record, record.timestamp_ms)
        skipped += core.dead_letters - before
    for states in core.store.partitions.values():
        if task_id in states:
            return states[task_id], skipped
    return None, skipped


def _task_records(cluster: Cluster, task_id: str, as_of_ms: int | None) -> list[SourceRecord]:
    """The task's records on every input of the projection, in log-time order."""
    prefix = cluster.prefix
    consumer = reader(cluster)
    try:
        topics = consumer.list_topics(timeout=15).topics
        tasks = cluster.topic(TASKS)
        if tasks not in topics:
            raise TopicNotFoundError(f"topic {tasks} does not exist; run `mesh topics ensure`")
        inbox = re.compile(f"^{re.escape(prefix)}{INBOX_PATTERN}")
        names = [tasks, *sorted(t for t in topics if inbox.match(t))]
        key = task_id.encode()
        assigned = [
            TopicPartition(t, partition_for(key, len(topics[t].partitions)), OFFSET_BEGINNING)
            for t in names
        ]
        consumer.assign(assigned)
        found: list[SourceRecord] = []

        def keep(message: Message) -> None:
            timestamp = message.timestamp()[1]
            if message.key() != key or (as_of_ms is not None and timestamp > as_of_ms):
                return
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                return
            found.append(SourceRecord(topic, partition, offset, timestamp, key, message.value()))

        read_to_end(consumer, assigned, keep)
    finally:
        consumer.close()
    return sorted(found, key=lambda r: (r.timestamp_ms, r.topic != tasks, r.topic, r.offset))
