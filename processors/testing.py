"""Run any processor with no broker (Kafka Streams' TopologyTestDriver).

Pipe records in, read records out, advance a manual clock. Records go through the same
:class:`~processors.runtime.core.Core` as on Kafka: the same decoding, dead-lettering, store and
source-offset bookkeeping; only the transactions and the network are missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic

from mesh.adapters.kafka.partitioning import partition_for
from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.keys import KeyDirectory, KeyStatement
from mesh.domain.topics import DLQ, KEYS
from processors.api import Processor, Restore, S
from processors.runtime.core import SOURCE_HEADER, Core, OutRecord, SourceRecord
from processors.runtime.tables import StaticTables

__all__ = ["TestDriver"]


class TestDriver(Generic[S]):
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        processor: Processor[S],
        partitions: int = 3,
        start_ms: int = 0,
        serde: Serde | None = None,
        *,
        agents: Mapping[str, AgentState] | None = None,
        halts: Mapping[str, Mapping[str, Any]] | None = None,
        keys: KeyDirectory | None = None,
    ) -> None:
        """Drive ``processor`` with an empty topic prefix. ``agents`` is the registry it sees
        as ``ctx.agents`` (``self.tables.agents``, to change between records). With ``keys``,
        key lookups go to that directory, and key statements the processor emits are folded
        into it after each record, as the runtime refreshes its tables between batches."""
        self.partitions = partitions
        self.now_ms = start_ms
        self.serde = serde or Serde(InMemoryRegistry())
        self.tables = StaticTables(agents, halts, keys)
        codec = MessageCodec(self.serde, PublicKeys())
        self.core: Core[S] = Core(processor, codec, "", f"processor:{processor.name}", self.tables)
        processor.init()
        self._every = processor.punctuate_every_ms
        self.outputs: list[OutRecord] = []
        self.inputs: list[SourceRecord] = []
        #: LAST: why a restart passed over the newest store records (forged ones).
        self.passed_over: list[str] = []
        self._next_offset: dict[tuple[str, int], int] = {}
        self._last_tick = start_ms

    # -- input -----------------------------------------------------------------------------

    def pipe(
        self, topic: str, key: str | None, value: bytes | None, *, offset: int | None = None
    ) -> list[OutRecord]:
        """Feed one record; ``offset`` re-feeds an earlier one (to test redelivery)."""
        raw_key = key.encode() if key is not None else None
        partition = partition_for(raw_key, self.partitions) if raw_key is not None else 0
        if offset is None:
            offset = self._next_offset.get((topic, partition), 0)
            self._next_offset[(topic, partition)] = offset + 1
        record = SourceRecord(topic, partition, offset, self.now_ms, raw_key, value)
        self.inputs.append(record)
        produced = self.core.handle(record, self.now_ms) + self.core.flush()
        self.outputs += produced
        self._fold_keys(produced)
        return produced

    def _fold_keys(self, produced: list[OutRecord]) -> None:
        directory = self.tables.keys
        if directory is None:
            return
        for out in produced:
            if out.topic == KEYS and out.value is not None:
                directory.apply(KeyStatement.from_record(self.serde.decode(out.value).record))

    def advance(self, ms: int) -> list[OutRecord]:
        """Move the clock on, punctuating once per elapsed interval as the runtime does."""
        self.now_ms += ms
        produced: list[OutRecord] = []
        every = self._every
        while every and self.now_ms - self._last_tick >= every:
            self._last_tick += every
            produced += self.core.punctuate(self._last_tick) + self.core.flush()
        self.outputs += produced
        return produced

    def seal(
        self,
        key: AgentKey,
        subject: str,
        body: dict[str, Any],
        *,
        task_id: str | None = None,
        at_ms: int | None = None,
        message_id: str | None = None,
        recipient: str = "",
    ) -> bytes:
        """A signed envelope from ``key``'s agent, created at ``at_ms`` (default: now)."""
        created = self.now_ms if at_ms is None else at_ms
        envelope = Envelope(
            message_id=message_id or f"m-{key.agent_id}-{created}-{len(self.outputs)}-{id(body)}",
            conversation_id=task_id or "c",
            correlation_id="corr",
            sender=key.agent_id,
            recipient_kind=RecipientKind.BROADCAST if not recipient else RecipientKind.AGENT,
            recipient=recipient,
            created_at_ms=created,
            task_id=task_id,
        )
        return MessageCodec(self.serde, PublicKeys()).seal(envelope, subject, body, key)

    # -- output ----------------------------------------------------------------------------

    def read(self, topic: str) -> list[tuple[str | None, dict[str, Any]]]:
        """Every record produced to ``topic`` so far, decoded, in order."""
        return [
            (r.key.decode() if r.key is not None else None, self.serde.decode(r.value).record)
            for r in self.outputs
            if r.topic == topic and r.value is not None
        ]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [record for _, record in self.read(DLQ)]

    def state(self, key: str) -> S | None:
        for states in self.core.store.partitions.values():
            if key in states:
                return states[key]
        return None

    def restart(self) -> None:
        """Rebuild the store from what the runtime would read back (see processors.api.Restore):
        TABLE from the store records produced, LAST from each partition's last one, SOURCE by
        replaying the store topic's records piped in (with the processor's
        ``replay_lookback_ms`` inputs of that period, in the order they were processed). The
        processor starts afresh (init)."""
        core, store = self.core, self.core.store_topic
        piped = [r for r in self.inputs if r.topic == store]
        produced = [r for r in self.outputs if r.topic == store]
        core.store = type(core.store)()
        core.processor.init()
        if core.processor.restore is Restore.SOURCE:
            lookback = dict(getattr(core.processor, "replay_lookback_ms", {}) or {})
            merged = [  # in the order they were processed: the store topic is an input too
                r
                for r in self.inputs
                if r.topic == store
                or (r.topic in lookback and r.timestamp_ms >= self.now_ms - lookback[r.topic])
            ]
            for record in merged if lookback else piped:
                core.replay(record, self.now_ms)
            done = getattr(core.processor, "restored", None)
            if lookback and done is not None:
                done()
            return
        if core.processor.restore is Restore.LAST:
            for partition in sorted({out.partition or 0 for out in produced}):
                newest = [
                    (offset, out.value, dict(out.headers).get(SOURCE_HEADER))
                    for offset, out in enumerate(produced)
                    if (out.partition or 0) == partition
                ]
                self.passed_over += core.adopt_head(partition, reversed(newest))
            return
        for out in produced:
            source = dict(out.headers).get(SOURCE_HEADER)
            core.restore(out.partition or 0, out.key, out.value, source)
