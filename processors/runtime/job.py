"""What the engine runs: a :class:`Job`, one processor instance between the Kafka clients and
its logic.

The engine (transactions, commits, rebalances) is the same for every processor; the job adds
what is particular to one: the topics it subscribes to, those that must share a partition
count, the global tables it reads, and its state restored for exactly the assigned partitions,
as the processor declared (:class:`~processors.api.Restore`). Every processor, registry, state
projections, audit and kill-switch alike, goes through one commit path
(:mod:`processors.runtime.engine`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mesh.adapters.kafka.agents import agent_table
from mesh.adapters.kafka.halts import HaltTable
from mesh.adapters.kafka.keys import KeyTable
from mesh.adapters.keyfiles import control_signers, mesh_anchor
from mesh.adapters.serde.messages import MessageCodec
from mesh.settings import Cluster
from processors.api import Processor, S
from processors.runtime.core import Core
from processors.runtime.restore import Committed, restore_partitions
from processors.runtime.tables import StaticTables, Tables

__all__ = ["Job", "Progress"]

#: Called with the number of records read so far while restoring (restore progress metrics).
Progress = Callable[[int], None]


class Job(Core[S]):
    """One processor instance as the engine runs it: its subscription, the topics that must be
    co-partitioned, its global tables, and its state restored as it declared."""

    def __init__(
        self,
        processor: Processor[S],
        codec: MessageCodec,
        cluster: Cluster,
        instance: str = "0",
    ) -> None:
        prefix = cluster.prefix
        wanted = processor.global_tables
        tables = (
            Tables(
                (lambda: agent_table(cluster, codec.serde)) if "agents" in wanted else None,
                (lambda: HaltTable(cluster, codec, control_signers(cluster.settings)))
                if "halts" in wanted
                else None,
                (lambda: KeyTable(cluster, codec.serde, mesh_anchor(cluster.settings)))
                if {"agents", "keys"} & set(wanted)
                else None,
            )
            if wanted
            else StaticTables()
        )
        detected_by = f"processor:{processor.name}:{instance}"
        super().__init__(processor, codec, prefix, detected_by, tables)
        self.cluster = cluster
        self.name = processor.name
        fixed = tuple(self.topic(topic) for topic in processor.inputs)
        more = tuple(self.topic(topic) for topic in processor.copartitioned)
        self.copartitioned = tuple(dict.fromkeys((*fixed, self.store_topic, *more)))
        patterns = tuple(f"^{re.escape(prefix)}{p}" for p in processor.input_patterns)
        self.subscription = (*fixed, *patterns)

    def start(self) -> None:
        self.processor.init()

    def assigned(
        self, partitions: list[int], progress: Progress, committed: Committed | None = None
    ) -> int:
        return restore_partitions(self.cluster, self, partitions, progress, committed)

    def revoked(self, partitions: list[int]) -> None:
        self.store.drop(partitions)

    def close(self) -> None:
        self.processor.close()
        self.tables.close()
