"""The contexts a processor acts through (see processors.api): one per event, one per tick,
and one for replaying a SOURCE store on restore (outputs discarded)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic

from mesh.errors import ProcessorError
from processors.api import Restore, S
from processors.runtime.records import OutRecord, SourceRecord
from processors.runtime.tables import AgentsView

if TYPE_CHECKING:
    from processors.runtime.core import Core

__all__ = ["EventContext", "ReplayContext", "TickContext"]


class _Outputs(Generic[S]):
    """Emitting, shared by every context."""

    def __init__(self, core: Core[S], now_ms: int, agents: AgentsView) -> None:
        self._core = core
        self._now_ms = now_ms
        self.agents = agents
        self.halts = core.tables.halts_view()
        self.outputs: list[OutRecord] = []

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def emit(
        self,
        topic: str,
        key: str,
        subject: str,
        record: Mapping[str, Any],
        partition: int | None = None,
    ) -> None:
        self.emit_raw(topic, key, self._core.serde.encode(subject, record), partition)

    def emit_raw(self, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        self.outputs.append(OutRecord(self._core.topic(topic), key.encode(), value, partition))

    def items(self) -> Iterator[tuple[str, S]]:
        store = self._core.store
        if self._core.processor.restore is Restore.LAST:
            for partition, head in list(store.heads.items()):
                yield str(partition), head
            return
        for states in list(store.partitions.values()):
            yield from list(states.items())


class EventContext(_Outputs[S]):
    def __init__(
        self, core: Core[S], record: SourceRecord, now_ms: int, agents: AgentsView
    ) -> None:
        super().__init__(core, now_ms, agents)
        self._partition = record.partition
        self._states = core.store.partitions[record.partition]
        self._source = f"{record.topic}:{record.partition}:{record.offset}".encode()

    def get(self, key: str) -> S | None:
        return self._states.get(key)

    def head(self) -> S | None:
        return self._core.store.heads.get(self._partition)

    def put(self, key: str, state: S) -> None:
        mode = self._core.processor.restore
        if mode is Restore.LAST:  # the store is a log: every put is a record of it
            self._core.store.heads[self._partition] = state
            self.outputs.append(self._core.state_record(self._partition, key, state, self._source))
            return
        self._states[key] = state
        if mode is Restore.TABLE:
            self._core.dirty[(self._partition, key)] = (state, self._source)

    def delete(self, key: str) -> None:
        if self._states.pop(key, None) is None:
            return
        if self._core.processor.restore is Restore.TABLE:
            self._core.dirty[(self._partition, key)] = (None, self._source)


class ReplayContext(EventContext[S]):
    """SOURCE restore: state changes apply, nothing is produced."""

    def emit_raw(self, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
        return None


class TickContext(_Outputs[S]):
    def __init__(self, core: Core[S], now_ms: int) -> None:
        super().__init__(core, now_ms, core.tables.view(False))
        self._partition_of = {
            key: partition for partition, states in core.store.partitions.items() for key in states
        }

    def put(self, key: str, state: S) -> None:
        if self._core.processor.restore is not Restore.TABLE:
            raise ProcessorError(f"{self._core.processor.name}: a tick may put only TABLE state")
        partition = self._partition_of[key]
        self._core.store.partitions[partition][key] = state
        self._core.dirty[(partition, key)] = (state, None)

    def delete(self, key: str) -> None:
        """Drop the key on every partition this instance holds it (a tombstone each)."""
        for partition, states in self._core.store.partitions.items():
            if states.pop(key, None) is not None and (
                self._core.processor.restore is Restore.TABLE
            ):
                self._core.dirty[(partition, key)] = (None, None)
