"""The runtime's global tables: a sender missing from the table is caught up once, by the
runtime, then refused; processors only ever see a read-only view."""

from __future__ import annotations

import pytest

from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import DLQ, STATE, TASKS
from mesh.errors import TableBehindError, UnknownSenderError
from processors.runtime.core import Core, SourceRecord
from processors.runtime.tables import AgentsView, Tables
from processors.state import StateProcessor
from processors.testing import TestDriver

KEY = AgentKey.generate("late")


def record(key: AgentKey) -> AgentState:
    return AgentState(key.agent_id, "team", "1", key.public_bytes, "{}")


class _Source:
    """A table source whose catch-up brings in what registered since the last read."""

    def __init__(self, arriving: dict[str, AgentState]) -> None:
        self.values: dict[str, AgentState] = {}
        self.arriving = arriving
        self.catch_ups = 0

    def catch_up(self) -> int:
        self.catch_ups += 1
        self.values.update(self.arriving)
        return len(self.arriving)

    def poll(self, max_records: int = 1000) -> int:
        return 0

    def close(self) -> None:
        return None


def task_write(serde: Serde, key: AgentKey) -> SourceRecord:
    body = {"task_id": "t-1", "key": "k", "value_json": "1", "expected_version": 0}
    driver: TestDriver[object] = TestDriver(StateProcessor(), serde=serde)
    value = driver.seal(key, "mesh.tasks.ContextWrite", body, task_id="t-1")
    return SourceRecord(TASKS, 0, 0, 0, b"t-1", value)


def core_over(source: _Source) -> tuple[Core[object], Serde]:
    serde = Serde(InMemoryRegistry())
    codec = MessageCodec(serde, PublicKeys())
    tables = Tables(lambda: source)
    tables.catch_up()  # the engine reads every table to its end before the first batch
    source.catch_ups = 0
    return Core(StateProcessor(), codec, "", "test", tables), serde


def test_a_sender_registered_a_moment_ago_is_found_by_one_catch_up() -> None:
    source = _Source({})
    core, serde = core_over(source)
    source.arriving = {"late": record(KEY)}  # registered after the table was read
    outputs = core.handle(task_write(serde, KEY), 0) + core.flush()
    assert [o.topic for o in outputs] == [STATE]
    assert source.catch_ups == 1


def test_a_sender_still_unknown_after_the_catch_up_is_dead_lettered() -> None:
    source = _Source({})
    core, serde = core_over(source)
    outputs = core.handle(task_write(serde, KEY), 0) + core.flush()
    assert [o.topic for o in outputs] == [DLQ]
    assert source.catch_ups == 1
    assert b"unknown_sender" in (outputs[0].value or b"")


def test_a_known_sender_needs_no_read() -> None:
    source = _Source({"late": record(KEY)})
    core, serde = core_over(source)
    assert [o.topic for o in core.handle(task_write(serde, KEY), 0) + core.flush()] == [STATE]
    assert source.catch_ups == 0


def test_a_retired_agent_is_not_a_sender() -> None:
    retired = AgentState("late", "team", "1", KEY.public_bytes, "{}", status=AgentStatus.RETIRED)
    view = AgentsView({"late": retired}, may_be_behind=True)
    with pytest.raises(TableBehindError):  # behind: the runtime catches up once ...
        view.public_key("late")
    with pytest.raises(UnknownSenderError):  # ... and then it is refused
        AgentsView({"late": retired}, may_be_behind=False).public_key("late")
