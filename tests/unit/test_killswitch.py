"""The kill-switch through the test driver: every rule at, just over and across its window."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState
from mesh.domain.control import (
    Action,
    Scope,
    chain_halt,
    control_key,
    control_record,
    halt_in_force,
)
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import CONTROL, FLEET_FACTS, TELEMETRY, THROTTLES
from mesh.errors import ConfigError, ControlUnavailableError
from processors.killswitch import KillSwitchProcessor, load_policy
from processors.killswitch.policy import Policy, parse_policy
from processors.testing import TestDriver
from sidecar.policy import AgentPolicy, parse_agent_policy

MESH = AgentKey.generate("mesh")
OPERATOR = AgentKey.generate("operator:alice")
AGENTS = {name: AgentKey.generate(name) for name in ("intake", "research", "drafting", "review")}
_ids = itertools.count()


def agent(name: str, depends_on: tuple[str, ...] = (), skill: str = "work") -> AgentState:
    card = f'{{"name": "{name}", "skills": [{{"id": "{skill}", "name": "{skill}"}}]}}'
    return AgentState(name, "team", "1", AGENTS[name].public_bytes, card, depends_on)


REGISTRY = {
    "intake": agent("intake", ("research",), "triage"),
    "research": agent("research", (), "research"),
    "drafting": agent("drafting", ("research",), "writing"),
    "review": agent("review", ("drafting",), "writing"),
}


class Fleet:
    """A driver around a kill-switch, and telemetry sealed by the fleet's agents."""

    def __init__(self, policy: dict[str, Any] | None = None, serde: Serde | None = None) -> None:
        self.serde = serde or Serde(InMemoryRegistry())
        self.codec = MessageCodec(self.serde, PublicKeys())
        self.processor = KillSwitchProcessor(
            self.codec,
            MESH,
            parse_policy(policy or {}),
            signers={k.agent_id: k.public_bytes for k in (MESH, OPERATOR)},
        )
        self.driver: TestDriver[dict[str, Any]] = TestDriver(
            self.processor, serde=self.serde, agents=REGISTRY
        )

    def report(
        self,
        who: str,
        kind: str = "TOOL_CALL",
        name: str = "search",
        *,
        cost: float = 0.0,
        ok: bool = True,
        peer: str | None = None,
        args: str | None = "a1",
        hop: int = 0,
        correlation: str = "req-1",
        signer: AgentKey | None = None,
        about: str | None = None,
        cause: str | None = None,
        tokens: int = 0,
        rule: str | None = None,
    ) -> list[dict[str, Any]]:
        """Pipe one telemetry event; return the halts it caused."""
        envelope = Envelope(
            f"t-{next(_ids)}",
            "c",
            correlation,
            who,
            RecipientKind.BROADCAST,
            "",
            self.driver.now_ms,
            hop,
            causation_id=cause,
        )
        body = {
            "agent_id": about or who,
            "kind": kind,
            "name": name,
            "peer": peer,
            "arguments_digest": args,
            "cost_usd": cost,
            "ok": ok,
            "input_tokens": tokens,
            "rule": rule,
        }
        value = self.codec.seal(
            envelope, "mesh.telemetry.TelemetryEvent", body, signer or AGENTS[who]
        )
        out = self.driver.pipe(TELEMETRY, who, value)
        for fact in [o for o in out if o.topic == FLEET_FACTS]:  # the second stage reads it
            out += self.driver.pipe(FLEET_FACTS, (fact.key or b"").decode(), fact.value or b"")
        halts = [o for o in out if o.topic == CONTROL]
        for halt in halts:  # the control topic is an input too: the halt comes back
            self.driver.pipe(CONTROL, (halt.key or b"").decode(), halt.value or b"")
        return [self.codec.open(o.value or b"", verify=False).body for o in halts]

    def control(
        self,
        action: Action,
        scope: Scope,
        target: str,
        key: AgentKey = OPERATOR,
        lifts: str | None = None,
    ) -> bytes:
        """Pipe a command; a RESUME names the halt in force under its key unless told."""
        control = control_key(scope, target)
        current = self.processor.book.halts.get(control)
        if action is Action.RESUME and lifts is None and current is not None:
            lifts = current["command_id"]
        record = control_record(
            action, scope, target, rule="operator", reason="test", requested_by=key.agent_id,
            lifts=lifts,
        )  # fmt: skip
        value = seal_control(self.codec, key, record, self.driver.now_ms)
        self.driver.pipe(CONTROL, control, value)
        return value

    def halted(self, key: str) -> bool:
        return key in self.processor.book.halts

    def at(self, ms: int) -> Fleet:
        self.driver.now_ms = ms
        return self


def test_spend_exactly_at_the_minute_budget_is_allowed_and_just_over_halts() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.5) == []
    assert fleet.at(10_000).report("research", "MODEL_CALL", "m", cost=0.5) == []
    halts = fleet.at(20_000).report("research", "MODEL_CALL", "m", cost=0.01)
    assert len(halts) == 1
    halt = halts[0]
    assert (halt["action"], halt["scope"], halt["target"], halt["rule"]) == (
        "HALT",
        "AGENT",
        "research",
        "spend_per_minute",
    )
    assert halt["affected_agents"] == ["research"] and len(halt["evidence"]) == 3
    assert halt["trigger_produced_at"] == 20_000 and "over the budget of $1.0000" in halt["reason"]


def test_spend_exactly_one_window_old_has_left_the_window() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    fleet.report("research", "MODEL_CALL", "m", cost=0.6)
    assert fleet.at(60_000).report("research", "MODEL_CALL", "m", cost=0.6) == []  # edge: out
    assert len(fleet.at(119_999).report("research", "MODEL_CALL", "m", cost=0.6)) == 1


def test_spend_per_hour() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 100, "max_cost_per_hour": 2.0}})
    for minute in range(4):
        assert fleet.at(minute * 60_000).report("drafting", "MODEL_CALL", "m", cost=0.5) == []
    halts = fleet.at(3_599_999).report("drafting", "MODEL_CALL", "m", cost=0.5)
    assert [h["rule"] for h in halts] == ["spend_per_hour"]


def test_the_same_tool_call_repeating_halts_on_the_first_over_the_limit() -> None:
    fleet = Fleet({"agent": {"max_repeated_tool_calls": 3, "repeat_window_s": 10}})
    for i in range(3):
        assert fleet.at(i).report("research", args="same") == []
    assert fleet.at(3).report("research", args="other") == []  # other arguments
    assert fleet.at(10_000).report("research", args="same") == []  # the first one left
    halts = fleet.at(10_000).report("research", args="same")  # 1, 2, 10000, 10000
    assert [h["rule"] for h in halts] == ["repeated_tool_call"]


def test_a_causation_cycle_halts_with_dependants_when_configured() -> None:
    fleet = Fleet({"agent": {"max_cycle_repeats": 2}, "radius": {"causation_cycle": "dependants"}})
    for i in range(2):
        assert fleet.at(i).report("research", "MESSAGE_SENT", "send", peer="drafting") == []
    other = fleet.report("research", "MESSAGE_SENT", "send", peer="drafting", correlation="r2")
    assert other == []
    halts = fleet.at(5).report("research", "MESSAGE_SENT", "send", peer="drafting")
    assert len(halts) == 1
    assert (halts[0]["rule"], halts[0]["scope"]) == ("causation_cycle", "DEPENDANTS")
    assert halts[0]["affected_agents"] == ["research", "drafting", "intake", "review"]


def test_hop_count_over_the_limit() -> None:
    fleet = Fleet({"agent": {"max_hop_count": 3}})
    assert fleet.report("intake", "MESSAGE_SENT", "send", peer="research", hop=3) == []
    halts = fleet.report("intake", "MESSAGE_SENT", "send", peer="research", hop=4)
    assert [h["rule"] for h in halts] == ["hop_limit"]


def test_a_tool_outside_the_agents_policy_halts_by_capability() -> None:
    fleet = Fleet(
        {
            "agents": {"drafting": {"allowed_tools": ["write"]}},
            "radius": {"tool_not_allowed": "capability"},
        }
    )
    assert fleet.report("drafting", name="write") == []
    assert fleet.report("research", name="shell") == []  # research may call anything
    halts = fleet.report("drafting", name="shell")
    assert len(halts) == 1
    assert (halts[0]["scope"], halts[0]["target"]) == ("CAPABILITY", "writing")
    assert halts[0]["affected_agents"] == ["drafting", "review"]
    assert "'shell', which its policy does not allow (allowed: write)" in halts[0]["reason"]


def test_an_error_storm() -> None:
    fleet = Fleet({"agent": {"max_errors": 3, "error_window_s": 1}})
    for i in range(3):
        assert fleet.at(i * 100).report("review", "ERROR", "Timeout", ok=False) == []
    assert fleet.at(1_000).report("review", "ERROR", "Timeout", ok=False) == []  # first left
    halts = fleet.at(1_050).report("review", "TOOL_CALL", "fetch", ok=False)
    assert [h["rule"] for h in halts] == ["error_storm"]


def test_fleet_spend_halts_the_fleet() -> None:
    fleet = Fleet({"fleet": {"max_cost_per_minute": 1.0}})
    assert fleet.report("intake", "MODEL_CALL", "m", cost=0.4) == []
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.4) == []
    halts = fleet.report("drafting", "MODEL_CALL", "m", cost=0.4)
    assert len(halts) == 1
    assert (halts[0]["scope"], halts[0]["target"], halts[0]["rule"]) == (
        "FLEET",
        "*",
        "fleet_spend_per_minute",
    )
    assert halts[0]["affected_agents"] == ["drafting", "intake", "research", "review"]
    assert fleet.report("review", "MODEL_CALL", "m", cost=5) == []  # the fleet is halted


def test_a_halted_agent_is_not_halted_again_and_a_resume_starts_fresh_windows() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=1.5)) == 1
    assert fleet.report("research", "MODEL_CALL", "m", cost=1.5) == []  # no flapping
    fleet.control(Action.RESUME, Scope.AGENT, "research")
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.9) == []  # fresh window
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=0.2)) == 1


def test_an_operator_halt_silences_the_rules_until_resumed() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    fleet.control(Action.HALT, Scope.AGENT, "research")
    assert fleet.report("research", "MODEL_CALL", "m", cost=5) == []
    fleet.control(Action.RESUME, Scope.AGENT, "research")
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=5)) == 1


def test_a_resume_not_signed_by_a_control_signer_is_dead_lettered_and_lifts_nothing() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=1.5)) == 1
    fleet.control(Action.RESUME, Scope.AGENT, "research", key=AGENTS["research"])  # itself
    forged = AgentKey.generate(OPERATOR.agent_id)  # an operator's name, another key
    fleet.control(Action.RESUME, Scope.AGENT, "research", key=forged)
    fleet.driver.pipe(CONTROL, "research", None)  # a tombstone
    assert fleet.halted("research")
    letters = fleet.driver.dead_letters()
    assert [d["reason_code"] for d in letters] == ["unknown_sender", "bad_signature", "rejected"]
    assert "not a control signer" in letters[0]["reason"]
    assert fleet.report("research", "MODEL_CALL", "m", cost=5) == []  # still halted, silent


def test_forged_misattributed_and_unknown_telemetry_go_to_the_dead_letter_topic() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    stranger = AgentKey.generate("stranger")
    fleet.report("research", "MODEL_CALL", "m", cost=5, signer=AGENTS["review"])
    fleet.report("research", "MODEL_CALL", "m", cost=5, about="drafting")
    fleet.driver.pipe(TELEMETRY, "x", b"\x00\x00\x00\x00\x07garbage")
    AGENTS["stranger"] = stranger
    try:
        fleet.report("stranger", "MODEL_CALL", "m", cost=5)
    finally:
        del AGENTS["stranger"]
    codes = [d["reason_code"] for d in fleet.driver.dead_letters()]
    assert codes == ["bad_signature", "rejected", "unknown_schema_id", "unknown_sender"]
    assert fleet.processor.halts_issued == 0


def test_policy_files_are_validated(tmp_path: Path) -> None:
    good = tmp_path / "policy.toml"
    good.write_text('[agent]\nmax_cost_per_minute = 2\n[radius]\nhop_limit = "fleet"\n')
    assert load_policy(good).agent.max_cost_per_minute == 2.0
    cases = {
        "[agent]\nmax_cost_per_minute = -1\n": "max_cost_per_minute must be greater than 0",
        "[agent]\nmax_errors = 2.5\n": "max_errors must be a whole number",
        "[agent]\nmax_errors = true\n": "max_errors must be a number",
        "[agent]\nmax_cost = 1\n": "unknown key 'max_cost'",
        '[radius]\nfleet_error_storm = "agent"\n': "fleet_error_storm = 'agent'; choose fleet",
        '[radius]\nno_such_rule = "agent"\n': "unknown rule 'no_such_rule'",
        '[agents.x]\nallowed_tools = "search"\n': "allowed_tools must be a list",
        "[agent\n": "is not valid TOML",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            load_policy(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")


def test_halts_in_force_survive_a_restart_and_a_resume_survives_one_too() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=1.5)) == 1
    fleet.driver.restart()  # halts replayed from the control topic; windows start empty
    assert fleet.halted("research")
    assert fleet.report("research", "MODEL_CALL", "m", cost=5) == []  # still halted: silent
    fleet.control(Action.RESUME, Scope.AGENT, "research")
    fleet.driver.restart()
    assert not fleet.halted("research")
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=5)) == 1  # watched again


def test_a_halt_issued_is_in_force_before_it_comes_back_on_the_control_topic() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})

    def spend(message_id: str) -> bytes:
        envelope = Envelope(message_id, "c", "c", "research", RecipientKind.BROADCAST, "", 0, 0)
        body = {"agent_id": "research", "kind": "MODEL_CALL", "name": "m", "peer": None,
                "arguments_digest": None, "cost_usd": 2.0, "ok": True}  # fmt: skip
        return fleet.codec.seal(envelope, "mesh.telemetry.TelemetryEvent", body, AGENTS["research"])

    first = fleet.driver.pipe(TELEMETRY, "research", spend("t-x"))
    again = fleet.driver.pipe(TELEMETRY, "research", spend("t-y"))
    assert [o.topic for o in first] == [CONTROL, FLEET_FACTS]  # the halt, and the fleet's fact
    assert again == []  # not halted twice while the first halt is in flight


def test_a_replayed_old_resume_is_dead_lettered_and_leaves_the_newer_halt_in_force() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=1.5)) == 1
    old_resume = fleet.control(Action.RESUME, Scope.AGENT, "research")  # lifts the first halt
    assert not fleet.halted("research")
    assert len(fleet.at(1_000).report("research", "MODEL_CALL", "m", cost=1.5)) == 1
    fleet.driver.pipe(CONTROL, "research", old_resume)  # captured, produced again
    assert fleet.halted("research")
    [letter] = fleet.driver.dead_letters()
    assert "replayed or out-of-date resume lifts nothing" in letter["reason"]
    assert letter["original"] == old_resume
    fleet.driver.restart()  # the replay is stale on restore too
    assert fleet.halted("research")


def test_the_mesh_key_never_lifts_a_halt() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=1.5)) == 1
    fleet.control(Action.RESUME, Scope.AGENT, "research", key=MESH)
    assert fleet.halted("research")
    assert "never resumes" in fleet.driver.dead_letters()[0]["reason"]


def test_the_killswitch_heartbeats_as_a_mesh_process_and_no_halt_stops_it() -> None:
    mesh = AgentKey.generate("mesh")
    serde = Serde(InMemoryRegistry())
    codec = MessageCodec(serde, PublicKeys())
    processor = KillSwitchProcessor(codec, mesh, Policy(), {"mesh": mesh.public_bytes}, "2")
    driver = TestDriver(processor, serde=serde)
    ticks = driver.advance(4_000)
    opened = [codec.open(t.value or b"", verify=False) for t in ticks]
    assert [o.body_subject for o in opened] == [
        "mesh.registry.AgentRegistered",
        "mesh.registry.Heartbeat",
        "mesh.registry.Heartbeat",
    ]
    assert {t.topic for t in ticks} == {"mesh.registry.events.v1"}
    assert opened[0].body["public_key"] == mesh.public_bytes  # registered with the mesh's key
    assert opened[2].body["instance_id"] == "killswitch-2" and opened[2].body["sequence"] == 2
    for o in opened:
        o.verify(mesh.public_bytes)
    assert halt_in_force({"*": {"command_id": "h"}}, "mesh.killswitch") is None


def test_a_policy_that_requires_the_killswitch_refuses_spend_while_it_is_not_seen() -> None:
    policy = parse_agent_policy({"require_killswitch_s": 30})
    policy.check_killswitch(12.0)
    with pytest.raises(ControlUnavailableError, match="has never been seen"):
        policy.check_killswitch(None)
    with pytest.raises(ControlUnavailableError, match="was last seen 31s ago"):
        policy.check_killswitch(31.0)
    AgentPolicy().check_killswitch(None)  # not required: nothing waits for it


def test_spend_windows_survive_a_restart() -> None:
    """Issue 14: a crash must not reset a runaway's spend window."""
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.6) == []
    fleet.at(10_000).driver.restart()  # the hour of telemetry is replayed with the control topic
    assert not fleet.halted("research") and fleet.processor.issued == {}
    halts = fleet.at(20_000).report("research", "MODEL_CALL", "m", cost=0.6)
    assert [h["rule"] for h in halts] == ["spend_per_minute"]  # 0.6 before the restart counts


def test_a_replay_neither_halts_twice_nor_counts_what_a_resume_cleared() -> None:
    fleet = Fleet({"agent": {"max_cost_per_minute": 1.0}})
    assert len(fleet.report("research", "MODEL_CALL", "m", cost=1.5)) == 1
    fleet.control(Action.RESUME, Scope.AGENT, "research")  # fresh windows
    fleet.driver.restart()
    assert not fleet.halted("research") and fleet.processor.issued == {}
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.9) == []  # 1.5 was cleared


def test_fleet_rules_add_up_the_facts_every_instance_forwards() -> None:
    """The second stage: two kill-switch instances each see one agent's spend; the instance
    that owns '*' gets both as facts and halts the fleet once."""
    policy = {"agent": {"max_cost_per_minute": 10.0}, "fleet": {"max_cost_per_minute": 1.0}}
    shared = Serde(InMemoryRegistry())  # one schema registry, as on a real cluster
    one, two = Fleet(policy, shared), Fleet(policy, shared)

    def facts(fleet: Fleet, who: str) -> list[bytes]:
        envelope = Envelope(f"t-{next(_ids)}", "c", "c", who, RecipientKind.BROADCAST, "", 0, 0)
        body = {"agent_id": who, "kind": "MODEL_CALL", "name": "m", "peer": None,
                "arguments_digest": None, "cost_usd": 0.6, "ok": True}  # fmt: skip
        value = fleet.codec.seal(envelope, "mesh.telemetry.TelemetryEvent", body, AGENTS[who])
        out = fleet.driver.pipe(TELEMETRY, who, value)
        assert [o.topic for o in out] == [FLEET_FACTS]  # under its own limits: no halt here
        return [o.value or b"" for o in out]

    owner = Fleet(policy, shared)  # the instance that owns the partition of '*'
    forwarded = facts(one, "research") + facts(two, "drafting")
    out = [o for value in forwarded for o in owner.driver.pipe(FLEET_FACTS, "*", value)]
    halts = [owner.codec.open(o.value or b"", verify=False).body for o in out if o.topic == CONTROL]
    assert [(h["rule"], h["target"]) for h in halts] == [("fleet_spend_per_minute", "*")]


# -- budgets per chain (issue 20) -----------------------------------------------------------

CHAIN_POLICY = {
    "agent": {"max_cost_per_minute": 100.0, "max_cost_per_hour": 100.0},
    "chain": {"max_cost_usd": 1.0, "max_fan_out": 3, "max_depth": 4, "deadline_s": 60},
}


def test_a_chain_over_its_budget_is_halted_alone_and_its_agents_serve_other_chains() -> None:
    fleet = Fleet(CHAIN_POLICY)
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.6, correlation="A", cause="a1") == []
    halts = fleet.report("drafting", "MODEL_CALL", "m", cost=0.6, correlation="A", cause="a2")
    assert [(h["scope"], h["target"], h["rule"]) for h in halts] == [("CHAIN", "A", "chain_spend")]
    assert halts[0]["affected_agents"] == ["drafting", "research"]  # participants, on record
    assert "$1.2000 across 2 agent(s)" in halts[0]["reason"]
    assert halts[0]["policy_hash"] == fleet.processor.policy.digest  # the policy that decided
    assert fleet.halted("chain:A")
    books = fleet.processor.book.halts
    assert halt_in_force(books, "research") is None and halt_in_force(books, "drafting") is None
    assert chain_halt(books, "A") is not None and chain_halt(books, "B") is None
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.6, correlation="B", cause="b1") == []
    assert fleet.report("research", "MODEL_CALL", "m", cost=5.0, correlation="A", cause="a3") == []


def test_chain_fan_out_depth_and_deadline_each_halt_the_chain() -> None:
    fleet = Fleet(CHAIN_POLICY)
    for n in range(3):  # three replies at hop 1: exactly at the limit
        sent = fleet.report("intake", "MESSAGE_SENT", "msg", peer="research", correlation="F",
                            cause=f"f{n}", hop=1)  # fmt: skip
        assert sent == []
    [fan] = fleet.report("intake", "MESSAGE_SENT", "msg", peer="research", correlation="F",
                         cause="f9", hop=1)  # fmt: skip
    assert fan["rule"] == "chain_fan_out" and fan["target"] == "F"
    [deep] = fleet.report("research", "TOOL_CALL", "search", correlation="D", cause="d", hop=5)
    assert deep["rule"] == "chain_depth"
    assert fleet.report("review", "ERROR", "x", ok=False, correlation="T", cause="t1") == []
    [late] = fleet.at(61_000).report("review", "ERROR", "x", ok=False, correlation="T", cause="t")
    assert late["rule"] == "chain_deadline" and "past its deadline of 60s" in late["reason"]


def test_chain_tokens_count_and_a_report_serving_no_message_is_no_chains() -> None:
    fleet = Fleet({"chain": {"max_tokens": 1000}})
    assert fleet.report("research", "MODEL_CALL", "m", tokens=900, correlation="K", cause="k") == []
    [halt] = fleet.report("research", "MODEL_CALL", "m", tokens=200, correlation="K", cause="k")
    assert halt["rule"] == "chain_tokens"
    assert fleet.report("research", "MODEL_CALL", "m", tokens=5000, correlation="own") == []


def test_an_operator_resume_of_a_chain_starts_it_afresh() -> None:
    fleet = Fleet(CHAIN_POLICY)
    assert (
        len(fleet.report("research", "MODEL_CALL", "m", cost=1.5, correlation="R", cause="r")) == 1
    )
    fleet.control(Action.RESUME, Scope.CHAIN, "R")
    assert not fleet.halted("chain:R")
    assert fleet.report("research", "MODEL_CALL", "m", cost=0.9, correlation="R", cause="r") == []


def test_an_agent_that_keeps_trying_what_its_policy_forbids_is_contained() -> None:
    """AISVS 9.3.6: policy violations trigger containment. Refusals the mesh or an operator
    caused (a halt, a halted chain, no policy) say nothing about the agent and never count."""
    fleet = Fleet({"agent": {"max_refusals": 3, "refusal_window_s": 60}})
    for rule in ("halted", "chain_halted", "no_policy", "control_unavailable") * 3:
        assert fleet.report("research", "SEND_REFUSED", "send", ok=False, rule=rule) == []
    for n, rule in enumerate(("tool_not_allowed", "arguments_not_allowed", "budget_exceeded")):
        assert fleet.at(n * 1000).report("research", "SEND_REFUSED", "x", ok=False, rule=rule) == []
    [halt] = fleet.at(5_000).report("research", "SEND_REFUSED", "x", ok=False, rule="no_permit")
    assert halt["rule"] == "refusal_storm" and halt["target"] == "research"
    assert "4 policy refusals in 60s" in halt["reason"] and "no_permit" in halt["reason"]


def test_a_fleet_rate_over_its_limit_is_throttled_then_halted_if_it_keeps_climbing() -> None:
    """AISVS 9.8.5: swarm-level rate limits throttle before they halt."""
    fleet = Fleet({"rates": {"window_s": 10, "throttle_s": 10, "halt_factor": 2.0,
                             "TOOL_CALL": 3}})  # fmt: skip
    throttles: list[dict[str, Any]] = []

    def call(who: str, ms: int) -> list[dict[str, Any]]:
        fleet.at(ms)
        envelope = Envelope(f"t-{next(_ids)}", "c", "c", who, RecipientKind.BROADCAST, "", ms, 0)
        body = {"agent_id": who, "kind": "TOOL_CALL", "name": "search", "peer": None,
                "arguments_digest": f"a{ms}", "cost_usd": 0.0, "ok": True}  # fmt: skip
        value = fleet.codec.seal(envelope, "mesh.telemetry.TelemetryEvent", body, AGENTS[who])
        out = fleet.driver.pipe(TELEMETRY, who, value)
        for fact in [o for o in out if o.topic == FLEET_FACTS]:
            out += fleet.driver.pipe(FLEET_FACTS, (fact.key or b"").decode(), fact.value or b"")
        for o in out:
            if o.topic == THROTTLES:
                opened = fleet.codec.open(o.value or b"", verify=False)
                opened.verify(MESH.public_bytes)  # signed with the mesh's key
                throttles.append(dict(opened.body))
        return [fleet.codec.open(o.value or b"", verify=False).body for o in out
                if o.topic == CONTROL]  # fmt: skip

    for n, who in enumerate(("research", "drafting", "review")):  # 3 in 10 s: at the limit
        assert call(who, n * 100) == []
    assert throttles == []
    assert call("intake", 400) == []  # the fourth: over, throttled for 10 s
    assert [(t["kind"], t["until"], t["observed"], t["limit"]) for t in throttles] == [
        ("TOOL_CALL", 10_400, 4, 3)
    ]
    assert call("research", 500) == []  # still throttled: not published again
    assert len(throttles) == 1
    halts = [h for ms in (600, 700) for h in call("drafting", ms)]  # 7 > 2 x 3: halt
    assert [(h["rule"], h["target"]) for h in halts] == [("fleet_rate", "*")]


def test_the_windows_of_past_conversations_and_calls_are_let_go() -> None:
    """Found by bench/soak.py: a window per (peer, correlation) and per (tool, arguments) was
    kept forever, one more per message; now only the last repeat_window_s of them are held."""
    from processors.killswitch.watch import Observation, Watch

    watch = Watch(parse_policy({"agent": {"repeat_window_s": 10}}))
    for i in range(5_000):  # one message a second, each its own conversation, each new args
        at = i * 1_000
        sent = Observation(f"m{i}", "intake", at, "MESSAGE_SENT", "send", peer="research",
                           correlation_id=f"conversation-{i}")  # fmt: skip
        called = Observation(f"t{i}", "intake", at, "TOOL_CALL", "search",
                             arguments_digest=f"args-{i}")  # fmt: skip
        assert watch.observe_agent(sent) is None
        assert watch.observe_agent(called) is None
    assert watch.windows_held() <= 2 * (10 + 256)  # the window's span plus one sweep's worth


def test_idle_chains_are_kept_as_their_totals_and_still_bounded_when_they_wake() -> None:
    """Found by bench/soak.py: every chain's full record was held for its hour. An idle chain
    now keeps only its start and totals, and its budget and deadline still hold."""
    from processors.killswitch.chains import ChainObservation, ChainWatch
    from processors.killswitch.policy import ChainLimits

    watch = ChainWatch(ChainLimits(max_cost_usd=0.10, deadline_s=900))
    spend = ChainObservation("e0", "sleeper", "research", 0, "MODEL_CALL", cost_usd=0.06)
    assert watch.observe(spend) is None
    for i in range(1, 3_001):  # a new two-record chain every second
        for n in range(2):
            assert watch.observe(ChainObservation(f"e{i}-{n}", f"c{i}", "a", i * 1000, "X")) is None
    assert watch.active <= 120 + 1_000  # the last two minutes, plus one sweep's worth
    assert len(watch) == 3_001  # the rest dormant, none forgotten within the hour
    woken = ChainObservation("e-late", "sleeper", "drafting", 3_100_000, "MODEL", cost_usd=0.06)
    firing = watch.observe(woken)
    assert firing is not None and firing.rule == "chain_spend"  # $0.12 across its sleep
    late = ChainObservation("e-later", "c5", "a", 3_200_000, "X")
    firing = watch.observe(late)
    assert firing is not None and firing.rule == "chain_deadline"
