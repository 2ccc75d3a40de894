"""The state projections processor through the test driver."""

import json

import pytest

from mesh.domain.agents import AgentState
from mesh.domain.identity import AgentKey
from mesh.domain.topics import STATE, TASKS
from processors.state import StateProcessor
from processors.testing import TestDriver


@pytest.fixture
def agents() -> dict[str, AgentKey]:
    return {name: AgentKey.generate(name) for name in ("intake", "research", "drafting")}


@pytest.fixture
def driver(agents: dict[str, AgentKey]) -> TestDriver:
    registry = {name: registered(key) for name, key in agents.items()}
    return TestDriver(StateProcessor(), start_ms=5_000, agents=registry)


def registered(key: AgentKey) -> AgentState:
    return AgentState(key.agent_id, "team", "1", key.public_bytes, "{}")


def task_event(
    driver: TestDriver,
    key: AgentKey,
    kind: str,
    at_ms: int,
    target: str | None = None,
    message_id: str | None = None,
    **extra: object,
) -> bytes:
    body = {"task_id": "t-1", "kind": kind, "actor": key.agent_id, "target": target, **extra}
    value = driver.seal(
        key, "mesh.tasks.TaskEvent", body, task_id="t-1", at_ms=at_ms, message_id=message_id
    )
    driver.pipe(TASKS, "t-1", value)
    return value


def write(driver: TestDriver, key: AgentKey, name: str, value: object, expected: int) -> None:
    body = {
        "task_id": "t-1",
        "key": name,
        "value_json": json.dumps(value),
        "expected_version": expected,
    }
    driver.pipe(TASKS, "t-1", driver.seal(key, "mesh.tasks.ContextWrite", body, task_id="t-1"))


def test_handoffs_participants_artifacts_and_status(driver: TestDriver, agents) -> None:
    task_event(driver, agents["intake"], "REQUESTED", 1_000)
    task_event(driver, agents["intake"], "HANDED_OFF", 2_000, target="research")
    task_event(
        driver,
        agents["research"],
        "HANDED_OFF",
        3_000,
        target="drafting",
        artifact_uris=["s3://notes/1"],
    )
    state = driver.state("t-1")
    assert state.status == "HANDED_OFF"
    assert state.participants == ("intake", "research", "drafting")
    assert [(h.from_agent, h.to_agent) for h in state.handoffs] == [
        ("intake", "research"),
        ("research", "drafting"),
    ]
    assert state.artifacts == ("s3://notes/1",)
    [(_, last)] = driver.read(STATE)[-1:]
    assert last["version"] == 3 and last["handoffs"][1]["to_agent"] == "drafting"


def test_out_of_order_events_land_in_time_order(driver: TestDriver, agents) -> None:
    task_event(driver, agents["research"], "COMPLETED", 9_000)
    task_event(driver, agents["research"], "HANDED_OFF", 3_000, target="drafting")
    task_event(driver, agents["intake"], "HANDED_OFF", 2_000, target="research")
    state = driver.state("t-1")
    assert state.status == "COMPLETED"  # the latest-created event wins, not the last to arrive
    assert [h.at_ms for h in state.handoffs] == [2_000, 3_000]


def test_duplicate_message_is_a_no_op(driver: TestDriver, agents) -> None:
    value = task_event(driver, agents["intake"], "REQUESTED", 1_000, message_id="m-1")
    driver.pipe(TASKS, "t-1", value)  # redelivered at a new offset
    assert driver.state("t-1").version == 1
    assert len(driver.read(STATE)) == 1


def test_versioned_context_writes_and_a_stale_writer(driver: TestDriver, agents) -> None:
    write(driver, agents["research"], "outline", ["a", "b"], expected=0)
    write(driver, agents["drafting"], "outline", ["a", "b", "c"], expected=1)
    write(driver, agents["research"], "outline", ["a"], expected=1)  # read v1, v2 exists now
    entry = driver.state("t-1").context["outline"]
    assert (json.loads(entry.value_json), entry.version, entry.written_by) == (
        ["a", "b", "c"],
        2,
        "drafting",
    )
    [letter] = driver.dead_letters()
    assert letter["reason_code"] == "stale_write"
    assert (
        "expected version 1 but the key is at version 2, last written by drafting"
        in (letter["reason"])
    )


def test_delete_keeps_counting_versions(driver: TestDriver, agents) -> None:
    write(driver, agents["research"], "k", 1, expected=0)
    body = {"task_id": "t-1", "key": "k", "value_json": None, "expected_version": 1}
    driver.pipe(TASKS, "t-1", driver.seal(agents["research"], "mesh.tasks.ContextWrite", body))
    write(driver, agents["drafting"], "k", 2, expected=1)  # read before the delete: refused
    assert driver.state("t-1").context["k"].version == 2
    assert [d["reason_code"] for d in driver.dead_letters()] == ["stale_write"]


def test_forged_and_unknown_senders_never_reach_the_context(driver: TestDriver, agents) -> None:
    forger = AgentKey.generate("research")
    write(driver, forger, "k", "evil", expected=0)
    write(driver, AgentKey.generate("mallory"), "k", "evil", expected=0)
    assert driver.state("t-1") is None
    assert [d["reason_code"] for d in driver.dead_letters()] == ["bad_signature", "unknown_sender"]


def message(
    driver: TestDriver, key: AgentKey, to: str, task_id: str | None = "t-1", record_key="t-1"
) -> list:
    from sidecar.core import MESSAGE_SUBJECT, message_body

    value = driver.seal(key, MESSAGE_SUBJECT, message_body("hi"), task_id=task_id, recipient=to)
    return driver.pipe(f"mesh.inbox.{to}.v1", record_key, value)


def test_messages_on_a_task_add_their_ends_to_its_participants(driver: TestDriver, agents) -> None:
    task_event(driver, agents["intake"], "REQUESTED", 1_000)
    assert message(driver, agents["intake"], "research")  # research joins: one update
    assert driver.state("t-1").participants == ("intake", "research")
    assert message(driver, agents["research"], "intake") == []  # both known: nothing written
    assert message(driver, agents["research"], "reviewer") != []
    state = driver.state("t-1")
    assert state.participants == ("intake", "research", "reviewer")
    assert driver.read(STATE)[-1][1]["participants"] == ["intake", "research", "reviewer"]
    assert message(driver, agents["drafting"], "intake", task_id=None, record_key="c") == []
    assert driver.state("t-1").participants == state.participants  # no task: not its business


def test_a_forged_or_misfiled_message_on_a_task_is_dead_lettered(
    driver: TestDriver, agents
) -> None:
    stranger = AgentKey.generate("stranger")
    message(driver, stranger, "research")  # unknown sender, would add two participants
    message(driver, agents["intake"], "research", record_key="t-2")  # keyed off its task
    codes = [d["reason_code"] for d in driver.dead_letters()]
    assert codes == ["unknown_sender", "rejected"]
    assert driver.state("t-1") is None
