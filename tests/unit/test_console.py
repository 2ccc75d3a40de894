"""The console's pure parts: who a token lets in, the CSRF token, a fleet row."""

from __future__ import annotations

import json
from pathlib import Path

from console.auth import OPERATOR, VIEWER, csrf_for, load_tokens
from console.feed import agent_view, halt_view
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
    listed = halt_view("review", halt)
    assert (listed["requested_by"], listed["affected"]) == ("operator:root", ["review"])
