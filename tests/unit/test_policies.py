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


def test_message_constraints_parse_narrow_and_refuse() -> None:
    """AISVS C9.5.4: the parts an agent may send and a schema its DATA must fit."""
    import pytest

    from mesh.errors import ConfigError, PolicyViolationError

    operator = parse_agent_policy(
        {"message_parts": ["DATA", "TEXT"], "message_data": {"type": "object", "required": ["a"]}}
    )
    own = parse_agent_policy({"message_parts": ["DATA"], "message_data": {"maxProperties": 2}})
    both = narrowest(operator, own)
    assert both.message_parts == frozenset({"DATA"}) and len(both.message_data) == 2
    assert parse_agent_policy(both.to_json()) == both.__class__(  # a round trip keeps both rules
        message_parts=frozenset({"DATA"}),
        message_data=({"allOf": [{"type": "object", "required": ["a"]}, {"maxProperties": 2}]},),
    )
    ok = {"parts": [{"kind": "DATA", "data_json": '{"a": 1}'}]}
    both.check_message("mesh.a2a.Message", ok, "its policy")
    both.check_message("mesh.tasks.TaskEvent", {"parts": [{"kind": "TEXT"}]}, "its policy")
    for body, why in (
        ({"parts": [{"kind": "TEXT", "text": "hi"}]}, "part 0 of the message is TEXT"),
        ({"parts": [{"kind": "DATA", "data_json": '{"b": 1}'}]}, "'a' is a required property"),
        ({"parts": [{"kind": "DATA", "data_json": '{"a":1,"b":2,"c":3}'}]}, "has too many"),
    ):
        with pytest.raises(PolicyViolationError, match=why) as refused:
            both.check_message("mesh.a2a.Message", body, "its policy")
        assert refused.value.rule == "message_not_allowed"
    with pytest.raises(ConfigError, match="message_parts may name only DATA, FILE, TEXT"):
        parse_agent_policy({"message_parts": ["VIDEO"]})
    with pytest.raises(ConfigError, match="message_data is not a valid JSON Schema"):
        parse_agent_policy({"message_data": {"type": "nonsense"}})
