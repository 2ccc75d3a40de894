"""Operator-owned policies: the fold readers share, and the narrower of two policies."""

from __future__ import annotations

from mesh.domain.policies import PolicyBook, canonical, diff_policies, policy_hash
from sidecar.policy import AgentPolicy, narrowest, parse_agent_policy

OPERATORS = ["operator:alice"]


def record(target: str, version: int, **policy: object) -> dict[str, object]:
    return {"target": target, "version": version, "policy_json": canonical(policy), "reason": "r"}


def test_the_newest_operator_version_per_target_is_in_force() -> None:
    book = PolicyBook()
    assert book.apply(record("*", 1, budget_usd=5.0), "operator:alice", OPERATORS) is None
    assert book.apply(record("*", 2, budget_usd=1.0), "operator:alice", OPERATORS) is None
    replayed = book.apply(record("*", 1, budget_usd=5.0), "operator:alice", OPERATORS)
    assert replayed is not None and "a replay" in replayed
    forged = book.apply(record("*", 9, budget_usd=1e9), "research", OPERATORS)
    assert forged is not None and "not an operator" in forged
    in_force = book.in_force("research")
    assert in_force is not None and in_force.version == 2 and in_force.policy == {"budget_usd": 1.0}
    assert in_force.hash == policy_hash(canonical({"budget_usd": 1.0}))


def test_an_agents_own_target_beats_its_capability_which_beats_the_fleet() -> None:
    book = PolicyBook()
    for target, budget in (("*", 9.0), ("capability:search", 3.0), ("research", 1.0)):
        book.apply(record(target, 1, budget_usd=budget), "operator:alice", OPERATORS)
    assert book.in_force("research", ["search"]).target == "research"  # type: ignore[union-attr]
    assert book.in_force("other", ["search"]).target == "capability:search"  # type: ignore[union-attr]
    assert book.in_force("other", ["draft"]).target == "*"  # type: ignore[union-attr]


def test_an_agent_can_tighten_the_operators_policy_never_widen_it() -> None:
    operator = parse_agent_policy(
        {"allowed_tools": ["search", "fetch"], "budget_usd": 1.0, "max_hop_count": 5}
    )
    wider = AgentPolicy(budget_usd=100.0, max_hop_count=50)  # the agent asks for more
    assert narrowest(operator, wider) == AgentPolicy(
        allowed_tools=frozenset({"search", "fetch"}), budget_usd=1.0, max_hop_count=5
    )
    tighter = AgentPolicy(allowed_tools=frozenset({"search", "shell"}), budget_usd=0.5)
    effective = narrowest(operator, tighter)
    assert effective.allowed_tools == frozenset({"search"}) and effective.budget_usd == 0.5
    assert narrowest(AgentPolicy(), AgentPolicy()) == AgentPolicy()


def test_a_diff_names_each_key_that_changes() -> None:
    old = {"budget_usd": 10.0, "max_hop_count": 12, "allowed_tools": ["a"]}
    new = {"budget_usd": 5.0, "max_hop_count": 12, "max_message_bytes": 1024}
    assert diff_policies(old, new) == [
        '- allowed_tools: ["a"]',
        "~ budget_usd: 10.0 -> 5.0",
        "+ max_message_bytes: 1024",
    ]
    assert diff_policies(new, new) == []
