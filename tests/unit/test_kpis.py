"""KPIs on a scripted fleet equal hand-computed values, through the processor (its pieces
added up per partition) and through the one-place fold `--from-audit` uses."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.domain.agents import AgentState
from mesh.domain.control import Action, Scope, control_record
from mesh.domain.drills import CANARY, DRILL_SUBJECT, DrillResult
from mesh.domain.identity import AgentKey
from mesh.domain.kpis import (
    Baseline,
    KpiBook,
    KpiView,
    Totals,
    figures,
    parse_baselines,
    parse_piece_key,
)
from mesh.domain.topics import CONTROL, DRILLS, KPI_COSTS, TASKS, TELEMETRY
from mesh.errors import ConfigError
from processors.kpis import KpisProcessor
from processors.testing import TestDriver

CONTROL_SUBJECT = "mesh.control.ControlCommand"
A, B = AgentKey.generate("intake"), AgentKey.generate("worker")
OPERATOR = AgentKey.generate("operator:root")
SIGNERS = {"operator:root": OPERATOR.public_bytes}

Fact = tuple[
    str, str, AgentKey, dict[str, Any], str | None, int
]  # topic, subject, by, body, task, at


def task(kind: str, by: AgentKey, task_id: str, at: int, **extra: Any) -> Fact:
    body = {"task_id": task_id, "kind": kind, "actor": by.agent_id, "target": None, **extra}
    return (TASKS, "mesh.tasks.TaskEvent", by, body, task_id, at)


def spend(by: AgentKey, kind: str, cost: float, task_id: str | None, at: int) -> Fact:
    body = {"agent_id": by.agent_id, "kind": kind, "name": "x", "cost_usd": cost, "ok": True}
    return (TELEMETRY, "mesh.telemetry.TelemetryEvent", by, body, task_id, at)


def halt(target: str, rule: str, affected: list[str], reason: str, at: int) -> Fact:
    body = control_record(
        Action.HALT, Scope.AGENT, target, rule=rule, reason=reason,
        requested_by="operator:root", affected=affected,
    )  # fmt: skip
    return (CONTROL, CONTROL_SUBJECT, OPERATOR, body, None, at)


SCRIPT: list[Fact] = [
    task("REQUESTED", A, "t1", 1_000, workflow="refunds"),
    task("HANDED_OFF", A, "t1", 2_000),
    spend(B, "TOOL_CALL", 0.30, "t1", 2_500),
    spend(B, "MODEL_CALL", 0.20, "t1", 2_600),
    task("COMPLETED", B, "t1", 3_000, value_usd=10.0),
    task("COMPLETED", B, "t1", 3_100, value_usd=10.0),  # said twice: counted once
    spend(B, "MODEL_CALL", 0.50, "t2", 3_500),  # before t2 names its workflow
    task("REQUESTED", A, "t2", 4_000, workflow="refunds"),
    task("HANDED_OFF", A, "t2", 4_500),
    task("ESCALATED", B, "t2", 5_000),
    task("FAILED", B, "t2", 6_000),
    task("REQUESTED", A, "t3", 6_500, workflow="quotes"),
    task("COMPLETED", A, "t3", 7_000, value_usd=4.0),
    spend(B, "MODEL_CALL", 0.10, None, 7_500),
    spend(B, "TOOL_PERMIT", 9.99, "t3", 7_600),  # a reservation, not spend
    halt("worker", "operator", ["worker"], "looks wrong", 8_000),
    halt("chain:c", "chain_spend", ["intake", "worker"], "over budget", 8_100),
    halt(CANARY, "operator", [CANARY], "scheduled kill-switch drill", 8_200),
    (TELEMETRY, "mesh.telemetry.TelemetryEvent", B,
     {"agent_id": "worker", "kind": "HALT_ACK", "name": "chain_spend", "latency_ms": 40.0},
     None, 8_300),
    (DRILLS, DRILL_SUBJECT, OPERATOR,
     DrillResult(CANARY, 8_400, True, 300.0, 10.0, 5.0).to_record(), None, 8_400),
]  # fmt: skip


def through_processor() -> KpiView:
    return _view(_driven())


def _driven() -> TestDriver[Any]:
    registry = {k.agent_id: AgentState(k.agent_id, "t", "1", k.public_bytes, "{}") for k in (A, B)}
    serde = Serde(InMemoryRegistry())
    processor = KpisProcessor(serde, SIGNERS)
    driver: TestDriver[Any] = TestDriver(processor, start_ms=0, serde=serde, agents=registry)
    for topic, subject, by, body, task_id, at in SCRIPT:
        key = task_id if topic == TASKS else by.agent_id
        if topic == CONTROL:
            key = str(body["target"])
        driver.now_ms = at
        out = driver.pipe(topic, key, driver.seal(by, subject, body, task_id=task_id, at_ms=at))
        for cost in [o for o in out if o.topic == KPI_COSTS]:  # the re-keyed costs come back
            driver.pipe(KPI_COSTS, cost.key.decode(), cost.value)  # type: ignore[union-attr]
    return driver


def _view(driver: TestDriver[Any]) -> KpiView:
    view = KpiView()
    for states in driver.core.store.partitions.values():
        for key, state in states.items():
            parsed = parse_piece_key(key)
            if parsed is not None:
                view.add(*parsed, state)
    return view


def folded() -> KpiBook:
    book = KpiBook()
    for topic, _, by, body, task_id, at in SCRIPT:
        if topic == TASKS:
            book.task_event(body, at)
        elif topic == TELEMETRY:
            book.telemetry(by.agent_id, task_id, body, at)
        elif topic == CONTROL:
            book.control(body, at)
        else:
            book.drill(body)
    return book


FLEET = Totals(
    tasks=3, completed=2, failed=1, value_usd=14.0, cost_usd=1.10, escalations=1,
    manual_halts=1, halts=2, halted_agents=3, halt_ms=50.0, halt_samples=2, handoffs=2,
    failed_handoffs=1,
)  # fmt: skip


@pytest.mark.parametrize("source", [through_processor, folded], ids=["processor", "fold"])
def test_scripted_fleet_kpis_equal_hand_computed_values(source: Any) -> None:
    view = source()
    fleet = view.window("fleet", "all", 10_000)
    assert _close(fleet, FLEET), fleet
    refunds = view.window("workflow:refunds", "all", 10_000)
    assert _close(refunds, Totals(tasks=2, completed=1, failed=1, value_usd=10.0, cost_usd=1.0,
                                  escalations=1, handoffs=2, failed_handoffs=1))  # fmt: skip
    quotes = view.window("workflow:quotes", "all", 10_000)
    assert _close(quotes, Totals(tasks=1, completed=1, value_usd=4.0))
    worker = view.window("agent:worker", "all", 10_000)
    assert _close(worker, Totals(completed=1, failed=1, value_usd=10.0, cost_usd=1.10,
                                 escalations=1, halts=2, manual_halts=1, halt_ms=40.0,
                                 halt_samples=1, failed_handoffs=1))  # fmt: skip
    assert view.window("fleet", "1h", 10_000) == fleet  # all within the hour
    assert view.window("fleet", "1h", 10_000 + 2 * 3_600_000) == Totals()  # long after


def test_totals_survive_a_restart_and_old_buckets_are_dropped() -> None:
    driver = _driven()
    driver.restart()  # state restored from the compacted store topic's records
    assert _close(_view(driver).window("fleet", "all", 10_000), FLEET)
    driver.advance(2 * 86_400_000)  # two days on: buckets and task tracks go, all time stays
    keys = {k for states in driver.core.store.partitions.values() for k in states}
    assert keys and all(k.endswith("|all") for k in keys), keys
    assert _close(_view(driver).window("fleet", "all", 10_000), FLEET)


def _close(a: Totals, b: Totals) -> bool:
    return all(getattr(a, f) == pytest.approx(getattr(b, f)) for f in Totals.__dataclass_fields__)


def test_the_figures_a_board_reads() -> None:
    f = figures(FLEET, Baseline(8.0, "10 minutes of a person at $48.00/h"))
    assert f["roi"] == pytest.approx((14.0 - 1.10) / 1.10, rel=1e-5)
    assert f["cost_per_task_usd"] == pytest.approx(1.10 / 3, rel=1e-5)
    assert f["cost_per_completed_task_usd"] == pytest.approx(0.55)
    assert f["intervention_rate_per_100"] == pytest.approx(200 / 3, rel=1e-5)
    assert f["blast_radius_agents_per_halt"] == 1.5
    assert f["mean_time_to_halt_ms"] == 25.0
    assert f["task_success_rate"] == pytest.approx(2 / 3, rel=1e-5)
    assert f["handoff_failure_rate"] == 0.5
    assert f["saving_per_task_usd"] == pytest.approx(8.0 - 0.55)
    assert f["saving_usd"] == pytest.approx(2 * 7.45)
    assert f["baseline_assumption"] == "10 minutes of a person at $48.00/h"
    assert figures(Totals())["roi"] is None  # no spend yet: no ratio, not zero


def test_baselines_from_toml() -> None:
    found = parse_baselines(
        """
        [workflow.refunds]
        human_minutes = 12
        usd_per_hour = 50
        note = "finance desk, 2026 rates"
        [workflow.quotes]
        usd_per_run = 0.4
        """
    )
    assert found["refunds"].usd_per_task == 10.0
    assert (
        found["refunds"].assumption
        == "12 minutes of a person at $50.00/h; finance desk, 2026 rates"
    )
    assert found["quotes"].assumption == "existing automation at $0.40 per run"
    with pytest.raises(ConfigError, match="needs usd_per_run, or human_minutes"):
        parse_baselines("[workflow.x]\nhuman_minutes = 3")
    with pytest.raises(ConfigError, match="must be a number >= 0"):
        parse_baselines("[workflow.x]\nusd_per_run = -1")


def test_messages_and_errors_count_for_the_sender_and_the_peer() -> None:
    book = KpiBook()
    book.telemetry("worker", None, {"kind": "MESSAGE_SENT", "peer": "review"}, 1_000)
    book.telemetry("worker", None, {"kind": "ERROR", "name": "timeout"}, 1_000)
    worker = book.window("agent:worker", "all", 2_000)
    assert (worker.messages_sent, worker.errors) == (1, 1)
    assert book.window("agent:review", "all", 2_000).messages_received == 1
    assert figures(book.window("fleet", "all", 2_000))["messages_sent"] == 1


def test_forged_records_count_for_nothing() -> None:
    """A hostile agent inflating the KPIs: spend signed with a key the registry does not hold,
    a halt and a drill result signed by an agent instead of an operator. All skipped."""
    driver = _driven()
    mallory = AgentKey.generate("worker")  # claims to be worker, with another key
    forged: list[Fact] = [
        spend(mallory, "MODEL_CALL", 99.0, "t1", 9_000),
        (CONTROL, CONTROL_SUBJECT, B, halt("x", "operator", ["x"], "fake", 9_100)[3], None, 9_100),
        (DRILLS, DRILL_SUBJECT, B, DrillResult(CANARY, 9_200, True, 300.0, 1.0, 1.0).to_record(),
         None, 9_200),
    ]  # fmt: skip
    for topic, subject, by, body, task_id, at in forged:
        key = task_id if topic == TASKS else str(body.get("target") or by.agent_id)
        driver.pipe(topic, key, driver.seal(by, subject, body, task_id=task_id, at_ms=at))
    assert _close(_view(driver).window("fleet", "all", 10_000), FLEET)  # unchanged
    assert driver.core.processor.skipped == 3  # type: ignore[attr-defined]
