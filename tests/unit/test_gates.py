"""The production gates judged from evidence, the production rule, and the profile (pure)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mesh.domain.agents import AgentState
from mesh.domain.drills import DrillResult
from mesh.domain.gates import (
    Evidence,
    default_profile,
    evaluate,
    expires_at,
    failing,
    parse_profile,
    production_refusal,
)
from mesh.errors import ConfigError

NOW = 1_000_000_000
CARD = json.dumps({"skills": [{"id": "research"}]})
AGENT = AgentState("research", "team-r", "2.0", b"k" * 32, CARD)
POLICY = {"allowed_recipients": ["review"], "allowed_tools": ["search"], "budget_usd": 5.0}


def drill(**changes: object) -> DrillResult:
    base = DrillResult(
        "research", NOW - 60_000, True, 86400.0, 40.0, 30.0, agent_version="2.0",
        command_ids=("h", "r"),
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def evidence(**changes: object) -> Evidence:
    base = Evidence(
        agent=replace(AGENT, rollback_note="redeploy 1.9"),
        now_ms=NOW,
        policy=POLICY,
        policy_ref="research v3 abcd",
        killswitch_age_s=2.0,
        agent_drill=drill(),
        fleet_drill=replace(drill(), canary="mesh-canary", agent_version=None),
        audit_retention_ms=-1,
        audit_cleanup="delete",
        audit_lag={0: 0, 1: 3},
        escalation_holders=("human-desk",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def verdicts(e: Evidence) -> dict[str, tuple[bool, str]]:
    return {r.gate.id: (r.passed, r.evidence) for r in evaluate(default_profile(), e)}


def test_every_gate_passes_on_complete_evidence() -> None:
    results = verdicts(evidence())
    assert all(passed for passed, _ in results.values()), results
    assert len(results) == 7
    assert "halt acknowledged in 40 ms" in results["killswitch_tested"][1]


@pytest.mark.parametrize(
    ("changes", "gate", "says"),
    [
        ({"policy": {}}, "blast_radius", "allowed_recipients and allowed_tools unbounded"),
        ({"policy": {**POLICY, "allowed_tools": None}}, "blast_radius", "allowed_tools unbounded"),
        ({"dependants": tuple(f"a{i}" for i in range(6))}, "blast_radius", "over the maximum"),
        ({"policy": {**POLICY, "budget_usd": None}}, "spend_limits", "no budget_usd"),
        ({"policy": {}, "dependants": ()}, "spend_limits", "no budget_usd"),
        ({"killswitch_age_s": None}, "spend_limits", "never heartbeat"),
        ({"agent_drill": None}, "killswitch_tested", "no drill of version 2.0"),
        ({"agent_drill": drill(agent_version="1.9")}, "killswitch_tested", "no drill of version"),
        ({"agent_drill": drill(ok=False, failure="x")}, "killswitch_tested", "failed: x"),
        ({"agent_drill": drill(halt_ms=4000.0)}, "killswitch_tested", "4000.0 ms"),
        ({"agent_drill": drill(at_ms=NOW - 10**10)}, "killswitch_tested", "old"),
        ({"fleet_drill": None}, "killswitch_tested", "scheduled drill has never run"),
        ({"agent": AGENT}, "rollback_plan", "no earlier certified version"),
        ({"audit_retention_ms": 604800000}, "logging", "retention.ms=604800000"),
        ({"audit_lag": None}, "logging", "has not recorded"),
        ({"audit_lag": {0: 5000}}, "logging", "5000 records"),
        ({"escalation_holders": ()}, "escalation_path", "no running agent offers"),
        (
            {"policy": {**POLICY, "allowed_capabilities": ["review"]}},
            "escalation_path",
            "does not let it address 'escalation'",
        ),
        (
            {"agent": replace(AGENT, agent_card_json="{}", rollback_note="x")},
            "ownership",
            "declares no skill",
        ),
    ],
)
def test_each_gate_fails_on_the_evidence_it_reads(
    changes: dict[str, object], gate: str, says: str
) -> None:
    results = verdicts(evidence(**changes))
    passed, why = results[gate]
    assert not passed
    assert says in why
    failed = [g for g, (ok, _) in results.items() if not ok]
    assert failed == [gate] or changes.get("policy") == {}  # no policy: two gates fail


def test_no_operator_policy_fails_both_gates_that_read_it() -> None:
    results = verdicts(evidence(policy=None))
    assert [g for g, (ok, _) in results.items() if not ok] == ["blast_radius", "spend_limits"]
    assert "no operator policy" in results["blast_radius"][1]


def test_an_earlier_certified_version_is_a_rollback_plan() -> None:
    agent = replace(AGENT, certified_versions=("1.9", "2.0"))
    passed, why = verdicts(evidence(agent=agent))["rollback_plan"]
    assert passed and "1.9" in why and "2.0" not in why


def test_a_certification_lapses_when_its_drill_ages_out() -> None:
    profile = default_profile()
    e = evidence()
    assert expires_at(profile, e) == e.agent_drill.at_ms + int(profile.drill_max_age_s * 1000)  # type: ignore[union-attr]
    long_ago = replace(profile, valid_for_s=60.0)
    assert expires_at(long_ago, e) == NOW + 60_000


def test_only_messages_to_production_need_a_certified_sender() -> None:
    assert production_refusal("research", AGENT, "staging", NOW) is None
    never = production_refusal("research", AGENT, "production", NOW)
    assert never is not None and never.startswith("not certified for production: version 2.0")
    failing_gates = replace(AGENT, gates_failing=("rollback_plan", "logging"))
    said = production_refusal("research", failing_gates, "production", NOW)
    assert said is not None and "gates failing: rollback_plan, logging" in said
    certified = replace(AGENT, certifications=("production",), certified_until_ms=NOW + 1)
    assert production_refusal("research", certified, "production", NOW) is None
    lapsed = production_refusal("research", certified, "production", NOW + 1)
    assert lapsed is not None and "lapsed" in lapsed
    unknown = production_refusal("ghost", None, "production", NOW)
    assert unknown is not None and "not in the registry" in unknown


def test_a_profile_changes_gates_and_adds_attested_ones() -> None:
    profile = parse_profile(
        """
        max_dependants = 1
        [gates.rollback_plan]
        required = false
        [gates.red_team]
        title = "red-team review"
        eu_ai_act = ["Art. 15"]
        """
    )
    assert profile.max_dependants == 1
    results = evaluate(profile, evidence(agent=AGENT, dependants=("a", "b")))
    assert failing(results) == ("blast_radius", "red_team")  # rollback_plan is optional now
    attested = evaluate(profile, evidence(attestations={"red_team": "report 42"}))
    red = next(r for r in attested if r.gate.id == "red_team")
    assert red.passed and red.evidence == "attested: report 42"
    assert red.to_json()["eu_ai_act"] == ["Art. 15"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("max_dependants = 'x'", "max_dependants must be a int"),
        ("nonsense = 1", "unknown setting 'nonsense'"),
        ("[gates.logging]\nrequired = 'yes'", "required must be true or false"),
        ("[gates.logging]\nweight = 2", "unknown key 'weight'"),
        ("max_dependants = ", "not valid TOML"),
    ],
)
def test_a_broken_profile_is_named(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_profile(text)
