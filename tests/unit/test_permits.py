"""Tools authorized before they run (issue 20): permits, argument constraints, reservations,
chains and refusals stamped with the policy, with no broker (a memory sink for telemetry)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, Scope, control_key, control_record
from mesh.domain.envelope import new_envelope
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.policies import PolicyInForce
from mesh.errors import ConfigError, HaltedError, PolicyViolationError, ThrottledError
from sidecar.inbox import Counters
from sidecar.outbox import MemorySink, Outbox
from sidecar.permits import PermitBook, arguments_digest
from sidecar.policy import AgentPolicy, narrowest, parse_agent_policy
from sidecar.reports import Reports
from sidecar.telemetry import Kind

SEARCH = {
    "type": "object",
    "properties": {"q": {"type": "string", "maxLength": 20}, "site": {"enum": ["docs"]}},
    "required": ["q"],
    "additionalProperties": False,
}
OPERATOR = {
    "allowed_tools": ["search", "fetch"],
    "tools": {"search": {"arguments": SEARCH, "max_cost_usd": 0.5}},
    "budget_usd": 1.0,
}


class Plane:
    """What Reports asks the sidecar, settable by the test."""

    def __init__(self, policy: dict[str, Any] | None = OPERATOR) -> None:
        self.record = None
        if policy is not None:
            self.record = PolicyInForce("*", 3, json.dumps(policy), "op", "")
        self.halted: dict[str, dict[str, Any]] = {}
        self.halt: str | None = None
        self.throttled: set[str] = set()

    def enforced(self) -> AgentPolicy:
        if self.record is None:
            raise PolicyViolationError("no_policy", "no operator policy")
        return parse_agent_policy(self.record.policy)

    @property
    def operator_policy(self) -> PolicyInForce | None:
        return self.record

    def check_may_act(self) -> None:
        if self.halt:
            raise HaltedError(self.halt)

    def halts(self) -> dict[str, dict[str, Any]]:
        return self.halted

    def killswitch_age_s(self) -> float | None:
        return 1.0

    def check_throttle(self, kind: str, now_ms: int) -> None:
        if kind in self.throttled:
            raise ThrottledError(f"{kind} throttled", 3.0)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def reports(policy: dict[str, Any] | None = OPERATOR) -> tuple[Reports, MemorySink, Clock]:
    serde = Serde(InMemoryRegistry())
    sink, clock = MemorySink(), Clock()
    outbox = Outbox("research", AgentKey.generate("research"), MessageCodec(serde, PublicKeys()),
                    "", sink)  # fmt: skip
    return Reports(outbox, Counters(), Plane(policy), clock), sink, clock


async def test_a_permit_is_granted_before_the_call_and_the_report_quotes_it() -> None:
    r, sink, _ = reports()
    permit = await r.permit("search", {"q": "kafka"}, 0.2, None)
    assert permit.reserved_usd == 0.2 and r.spend.reserved == pytest.approx(0.2)
    await r.tool_call("search", {"q": "kafka"}, permit.permit_id, cost_usd=0.15, latency_ms=3,
                      ok=True, detail=None)  # fmt: skip
    assert r.spend.reserved == 0 and r.spend.total == pytest.approx(0.15)
    granted, done = (_open(r, value) for _t, _k, value in sink.records)
    assert granted["kind"] == Kind.TOOL_PERMIT and granted["cost_usd"] == 0.0
    assert granted["permit_id"] == permit.permit_id == done["permit_id"]
    assert granted["policy_hash"] == r.plane.operator_policy.hash == done["policy_hash"]  # type: ignore[attr-defined]
    assert done["kind"] == Kind.TOOL_CALL and done["cost_usd"] == 0.15
    assert done["arguments_digest"] == arguments_digest({"q": "kafka"})


async def test_a_call_without_a_permit_or_with_a_spent_one_is_a_reported_violation() -> None:
    r, sink, _ = reports()
    with pytest.raises(PolicyViolationError, match="without a permit") as no:
        await r.tool_call("search", {"q": "x"}, None, cost_usd=0.1, latency_ms=0, ok=True,
                          detail=None)  # fmt: skip
    assert no.value.rule == "no_permit"
    permit = await r.permit("search", {"q": "x"}, 0.0, None)
    await r.tool_call("search", None, permit.permit_id, cost_usd=None, latency_ms=0, ok=True,
                      detail=None)  # fmt: skip
    with pytest.raises(PolicyViolationError, match="single-use"):
        await r.tool_call("search", None, permit.permit_id, cost_usd=None, latency_ms=0, ok=True,
                          detail=None)  # fmt: skip
    other = await r.permit("search", {"q": "x"}, 0.0, None)
    with pytest.raises(PolicyViolationError, match="other arguments") as mismatch:
        await r.tool_call("search", {"q": "y"}, other.permit_id, cost_usd=None, latency_ms=0,
                          ok=True, detail=None)  # fmt: skip
    assert mismatch.value.rule == "permit_mismatch"
    refused = [
        b for b in (_open(r, v) for _t, _k, v in sink.records) if b["kind"] == "SEND_REFUSED"
    ]
    assert [b["rule"] for b in refused] == ["no_permit", "permit_used", "permit_mismatch"]
    assert all(b["policy_hash"] == r.plane.operator_policy.hash for b in refused)  # type: ignore[attr-defined]
    assert "[policy * v3 " in refused[0]["detail"]


async def test_arguments_outside_the_constraints_are_refused_before_the_tool_runs() -> None:
    r, sink, _ = reports()
    for arguments, why in (
        ({"q": "x" * 21}, "is too long"),
        ({"q": "x", "site": "evil.example"}, "is not one of"),
        ({"q": "x", "cmd": "rm -rf"}, "Additional properties"),
        ({}, "'q' is a required property"),
    ):
        with pytest.raises(PolicyViolationError, match=why) as refused:
            await r.permit("search", arguments, 0.0, None)
        assert refused.value.rule == "arguments_not_allowed"
    with pytest.raises(PolicyViolationError, match="forbids tool 'shell'"):
        await r.permit("shell", {"cmd": "ls"}, 0.0, None)
    with pytest.raises(PolicyViolationError, match=r"at most \$0\.5000"):
        await r.permit("search", {"q": "x"}, 0.6, None)
    assert len(r.permits) == 0 and r.spend.reserved == 0
    last = _open(r, sink.records[-1][2])
    assert last["kind"] == "SEND_REFUSED" and last["arguments_digest"] == arguments_digest(
        {"q": "x"}
    )


async def test_reservations_hold_the_budget_and_an_expired_permit_releases_it() -> None:
    r, _, clock = reports()
    await r.permit("search", {"q": "a"}, 0.5, None)
    await r.permit("fetch", None, 0.4, None)
    with pytest.raises(PolicyViolationError, match="reserved by permits") as over:
        await r.permit("search", {"q": "b"}, 0.2, None)  # 0.9 held + 0.2 > 1.0
    assert over.value.rule == "budget_exceeded"
    clock.now += 301  # both expire (permit_ttl_s 300): their reservations are released
    await r.permit("search", {"q": "b"}, 0.5, None)
    assert r.spend.reserved == pytest.approx(0.5)


async def test_an_expired_permit_does_not_cover_a_late_report() -> None:
    r, _, clock = reports()
    permit = await r.permit("fetch", None, 0.0, None)
    clock.now += 301
    with pytest.raises(PolicyViolationError, match="expired") as late:
        await r.tool_call("fetch", None, permit.permit_id, cost_usd=None, latency_ms=0, ok=True,
                          detail=None)  # fmt: skip
    assert late.value.rule == "permit_expired"


async def test_work_for_a_halted_chain_is_refused_and_reports_carry_the_chain() -> None:
    r, sink, _ = reports()
    cause = new_envelope("intake", "research")._replace(correlation_id="C1", hop_count=2)
    permit = await r.permit("fetch", None, 0.0, cause)
    await r.tool_call("fetch", None, permit.permit_id, cost_usd=0.0, latency_ms=0, ok=True,
                      detail=None)  # fmt: skip
    envelopes = [_envelope(r, v) for _t, _k, v in sink.records]
    assert [(e.correlation_id, e.hop_count, e.causation_id) for e in envelopes] == [
        ("C1", 2, cause.message_id)
    ] * 2
    chain = control_record(Action.HALT, Scope.CHAIN, "C1", rule="chain_spend", reason="over",
                           requested_by="killswitch:0")  # fmt: skip
    r.plane.halted[control_key(Scope.CHAIN, "C1")] = chain  # type: ignore[attr-defined]
    with pytest.raises(PolicyViolationError, match="chain C1 is halted") as halted:
        await r.permit("fetch", None, 0.0, cause)
    assert halted.value.rule == "chain_halted"
    await r.permit("fetch", None, 0.0, cause._replace(correlation_id="C2"))  # other chains go on


async def test_production_denies_without_an_operator_policy() -> None:
    r, _, _ = reports(policy=None)
    with pytest.raises(PolicyViolationError) as denied:
        await r.permit("fetch", None, 0.0, None)
    assert denied.value.rule == "no_policy"


def test_an_agent_narrows_the_operators_tool_rules_and_cannot_widen_them() -> None:
    operator = parse_agent_policy(OPERATOR)
    own = parse_agent_policy(
        {
            "allowed_tools": ["search", "shell"],
            "tools": {"search": {"arguments": {"properties": {"q": {"maxLength": 5}}},
                                 "max_cost_usd": 2.0}},
            "may_start_chains": False,
        }
    )  # fmt: skip
    enforced = narrowest(operator, own)
    assert enforced.allowed_tools == frozenset({"search"})
    assert enforced.tools["search"].max_cost_usd == 0.5  # the smaller cap
    assert len(enforced.tools["search"].schemas) == 2  # both constraints hold
    with pytest.raises(PolicyViolationError, match="is too long"):
        enforced.check_permit("search", {"q": "kafka streams"}, 0.0)
    with pytest.raises(PolicyViolationError, match="may not start a chain") as chain:
        enforced.check_chain_start(False)
    assert chain.value.rule == "chain_required"
    enforced.check_chain_start(True)


def test_a_policy_with_a_bad_tool_rule_is_refused_with_the_place() -> None:
    with pytest.raises(ConfigError, match=r"tools\.search\.arguments is not a valid JSON Schema"):
        parse_agent_policy({"tools": {"search": {"arguments": {"type": "strnig"}}}})
    with pytest.raises(ConfigError, match=r"tools\.search: unknown key 'max_cost'"):
        parse_agent_policy({"tools": {"search": {"max_cost": 1}}})
    with pytest.raises(ConfigError, match="may_start_chains must be true or false"):
        parse_agent_policy({"may_start_chains": "no"})


def test_a_permit_book_forgets_spent_ids_only_in_bulk() -> None:
    book = PermitBook()
    permit = book.grant("t", "d", 0.0, now=0, ttl_s=10, policy_hash=None)
    assert book.redeem(permit.permit_id, "t", "d", now=5) == permit
    assert book.expire(now=100) == []


def _open(r: Reports, value: bytes) -> dict[str, Any]:
    return dict(r.outbox.codec.open(value, verify=False).body)


def _envelope(r: Reports, value: bytes) -> Any:
    return r.outbox.codec.open(value, verify=False).envelope


async def test_a_throttled_kind_of_action_is_refused_with_a_retry_time() -> None:
    r, sink, _ = reports()
    r.plane.throttled.add("TOOL_CALL")  # type: ignore[attr-defined]
    with pytest.raises(ThrottledError) as throttled:
        await r.permit("fetch", None, 0.0, None)
    assert throttled.value.rule == "throttled" and throttled.value.retry_after_s == 3.0
    assert _open(r, sink.records[-1][2])["rule"] == "throttled"  # reported, not held against it
