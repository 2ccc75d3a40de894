"""The console's pure parts: who a token lets in, the CSRF token, a fleet row."""

from __future__ import annotations

import json
from pathlib import Path

from console.auth import OPERATOR, VIEWER, csrf_for, load_tokens
from console.views import add_rates, agent_view, halt_reach, halt_view, rows_to_redo
from mesh.adapters.acks import Ack
from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.control import Action, Scope, control_record


def test_tokens_are_made_once_owner_only_and_grant_one_role_each(tmp_path: Path) -> None:
    tokens = load_tokens(tmp_path)
    assert load_tokens(tmp_path) == tokens  # kept, not made again
    for name in ("operator.token", "viewer.token"):
        assert (tmp_path / "console" / name).stat().st_mode & 0o777 == 0o600
    assert tokens.role_of(tokens.operator) == OPERATOR
    assert tokens.role_of(tokens.viewer) == VIEWER
    assert tokens.role_of("guess") is None and tokens.role_of(None) is None
    assert csrf_for(tokens.operator) != csrf_for(tokens.viewer)
    assert csrf_for(tokens.operator) == csrf_for(tokens.operator)


def test_a_fleet_row_says_status_certification_and_who_halted_it() -> None:
    card = json.dumps({"skills": [{"id": "review"}]})
    agent = AgentState("review", "team", "2", b"k" * 32, card, status=AgentStatus.HALTED,
                       certifications=("production",), certified_until_ms=10,
                       instances=(("i-1", 5),))  # fmt: skip
    halt = control_record(Action.HALT, Scope.AGENT, "review", rule="operator", reason="look",
                          requested_by="operator:root", affected=["review"])  # fmt: skip
    row = agent_view(agent, halt, now_ms=5)
    assert row["status"] == "HALTED" and row["certified"] == "production"
    assert row["skills"] == ["review"] and row["instances"] == 1
    assert row["halted_by"] == "operator: look"
    assert agent_view(agent, None, now_ms=11)["certified"] == "lapsed"
    listed = halt_view("review", halt, 1_000, {}, ["review/i-1"])
    assert (listed["requested_by"], listed["affected"]) == ("operator:root", ["review"])
    assert listed["waiting"] == ["review/i-1"] and listed["slowest_ack_ms"] is None


def test_a_halt_says_who_acknowledged_it_how_fast_and_who_has_not() -> None:
    halt = control_record(Action.HALT, Scope.AGENT, "review", rule="spend", reason="over",
                          requested_by="mesh.killswitch", affected=["review"])  # fmt: skip
    acks = {
        "review/i-1": Ack(halt["command_id"], "review", "i-1", at_ms=1_012, latency_ms=30.0),
        "review/i-2": Ack(halt["command_id"], "review", "i-2", at_ms=1_025, latency_ms=41.5),
    }
    listed = halt_view("review", halt, 1_000, acks, ["review/i-1", "review/i-2", "review/i-3"])
    assert listed["acknowledged"] == ["review/i-1", "review/i-2"]
    assert listed["waiting"] == ["review/i-3"]
    assert listed["slowest_ack_ms"] == 25  # produce of the halt to the last acknowledgement
    assert listed["trigger_to_ack_ms"] == 41.5
    # an instance the registry no longer knows still counts as answered; a clock behind: 0
    early = {"review/i-1": acks["review/i-1"]._replace(at_ms=990)}
    listed = halt_view("review", halt, 1_000, early, ["review/i-1"])
    assert listed["waiting"] == [] and listed["slowest_ack_ms"] == 0


def test_a_halt_or_resume_redoes_the_rows_it_reaches_a_fleet_halt_every_row() -> None:
    def halt(scope: Scope, target: str, affected: list[str]) -> dict[str, object]:
        return control_record(Action.HALT, scope, target, rule="operator", reason="r",
                              requested_by="operator:root", affected=affected)  # fmt: skip

    one = halt(Scope.DEPENDANTS, "review", ["review", "publish"])
    assert rows_to_redo({}, {"review": one}) == {"review", "publish"}
    assert rows_to_redo({"review": one}, {}) == {"review", "publish"}  # its resume
    assert rows_to_redo({"review": one}, {"review": dict(one)}) == set()  # the same command
    assert rows_to_redo({}, {"chain:c-1": halt(Scope.CHAIN, "c-1", ["x"])}) == set()
    assert rows_to_redo({}, {"*": halt(Scope.FLEET, "*", [])}) is None
    assert rows_to_redo({"capability:pay": halt(Scope.CAPABILITY, "pay", ["a"])}, {}) is None


def test_a_chain_halt_waits_for_no_agent() -> None:
    chain = control_record(Action.HALT, Scope.CHAIN, "c-1", rule="chain_spend", reason="over",
                           requested_by="mesh.killswitch", affected=["intake"])  # fmt: skip
    intake = AgentState("intake", "team", "1", b"k" * 32, "{}", instances=(("i-1", 5),))
    assert halt_reach({"intake": intake}, chain) == []
    agent = control_record(Action.HALT, Scope.AGENT, "intake", rule="operator", reason="r",
                           requested_by="operator:root", affected=["intake"])  # fmt: skip
    assert halt_reach({"intake": intake}, agent) == ["intake/i-1"]


def test_health_rates_come_from_two_reads_and_skip_a_counter_that_went_back() -> None:
    before: dict[str, tuple[float, float]] = {}
    first = {"processors": {"registry": {"committed": 1_000}, "audit": {"error": "no group"}},
             "processor_metrics": {"registry": {"records_in": 500.0},
                                   "_unreachable": {"http://x/metrics": "refused"}}}  # fmt: skip
    add_rates(first, before, now=100.0)
    assert "offsets_per_s" not in first["processors"]["registry"]  # one read: no rate yet
    second = {"processors": {"registry": {"committed": 1_600}},
              "processor_metrics": {"registry": {"records_in": 800.0}}}  # fmt: skip
    add_rates(second, before, now=110.0)
    assert second["processors"]["registry"]["offsets_per_s"] == 60.0
    assert second["processor_metrics"]["registry"]["records_per_s"] == 30.0
    restarted = {"processor_metrics": {"registry": {"records_in": 20.0}}}
    add_rates(restarted, before, now=120.0)
    assert "records_per_s" not in restarted["processor_metrics"]["registry"]
    later = {"processor_metrics": {"registry": {"records_in": 120.0}}}
    add_rates(later, before, now=130.0)
    assert later["processor_metrics"]["registry"]["records_per_s"] == 10.0
