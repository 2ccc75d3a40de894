"""What the engine runs: a :class:`Job`, the unit between the Kafka clients and the logic.

The engine (transactions, commits, rebalances) is the same for every processor; what differs is
how records become outputs and how state comes back after a rebalance. A job owns exactly
that:

* :class:`KeyedJob` runs a :class:`~processors.api.Processor` with keyed state restored from
  its compacted store topic (registry, state projections);
* the audit job restores only each audit partition's chain head;
* the kill-switch job restores the halts in force from the control topic (its sliding
  windows start empty).

All of them go through one commit path (:mod:`processors.runtime.engine`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from mesh.adapters.kafka.agents import agent_table
from mesh.adapters.serde.messages import MessageCodec
from mesh.settings import Settings
from processors.api import Processor, S
from processors.runtime.core import Core, OutRecord, SourceRecord
from processors.runtime.restore import restore_partitions
from processors.runtime.tables import StaticTables, Tables

__all__ = ["Job", "KeyedJob", "Progress"]

#: Called with the number of records read so far while restoring (restore progress metrics).
Progress = Callable[[int], None]


class Job(Protocol):
    name: str
    #: Full topic names to subscribe to; an entry starting with ``^`` is a regex (new topics
    #: that match, such as agent inboxes, are picked up as they appear).
    subscription: tuple[str, ...]
    #: Full topic names that must share one partition count (inputs and store).
    copartitioned: tuple[str, ...]
    punctuate_every_ms: int | None
    #: The global tables it reads; the engine reads them to their end before the first batch
    #: and refreshes them between batches (processors.runtime.tables).
    tables: Tables

    def start(self) -> None: ...

    def handle(self, record: SourceRecord, now_ms: int) -> list[OutRecord]: ...

    def punctuate(self, now_ms: int) -> list[OutRecord]: ...

    def assigned(self, partitions: list[int], progress: Progress) -> int:
        """Restore state for newly assigned partitions before any of their records arrive."""
        ...

    def revoked(self, partitions: list[int]) -> None: ...

    def close(self) -> None: ...


class KeyedJob(Core[S]):
    """A keyed-state processor: state restored from its compacted, co-partitioned store topic."""

    def __init__(
        self,
        processor: Processor[S],
        codec: MessageCodec,
        settings: Settings,
        bootstrap: str,
        instance: str = "0",
    ) -> None:
        prefix = settings.topic_prefix
        tables = (
            Tables(agent_table(settings, bootstrap, codec.serde))
            if "agents" in processor.global_tables
            else StaticTables()
        )
        detected_by = f"processor:{processor.name}:{instance}"
        super().__init__(processor, codec, prefix, detected_by, tables)
        self.settings = settings
        self.bootstrap = bootstrap
        self.name = processor.name
        fixed = tuple(f"{prefix}{topic}" for topic in processor.inputs)
        self.copartitioned = (*fixed, self.store_topic)
        patterns = tuple(f"^{re.escape(prefix)}{p}" for p in processor.input_patterns)
        self.subscription = (*fixed, *patterns)

    def start(self) -> None:
        self.processor.init()

    def assigned(self, partitions: list[int], progress: Progress) -> int:
        return restore_partitions(self.settings, self.bootstrap, self, partitions, progress)

    def revoked(self, partitions: list[int]) -> None:
        self.store.drop(partitions)

    def close(self) -> None:
        self.processor.close()
        self.tables.close()
