"""The sidecar's parts with no broker: control view (halts, fail closed), routing, stamping,
telemetry and the supervisor."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.control import Action, HaltBook, Scope, control_record
from mesh.domain.envelope import new_envelope
from mesh.domain.identity import AgentKey
from mesh.errors import ControlUnavailableError, HaltedError, PolicyViolationError
from sidecar.halts import ControlView
from sidecar.policy import AgentPolicy
from sidecar.routing import route, stamp
from sidecar.supervise import Supervisor
from sidecar.telemetry import Kind, telemetry_body, telemetry_envelope


def halt(target: str, action: Action = Action.HALT) -> dict[str, Any]:
    return control_record(
        action, Scope.AGENT, target, rule="operator", reason="test", requested_by="op"
    )


def agent(name: str, skill: str = "work", status: AgentStatus = AgentStatus.LIVE) -> AgentState:
    card = f'{{"skills": [{{"id": "{skill}"}}]}}'
    key = AgentKey.generate(name).public_bytes
    return AgentState(name, "team", "1", key, card, status=status)


# -- control view: fail closed ---------------------------------------------------------------


def test_no_action_before_control_has_been_read() -> None:
    view = ControlView("a", stale_after_s=5)
    with pytest.raises(ControlUnavailableError, match="not caught up"):
        view.check(now=0)


def test_a_confirmed_view_lets_the_agent_act_until_the_bound() -> None:
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=100)
    view.check(now=105)  # exactly at the bound: allowed
    with pytest.raises(ControlUnavailableError, match=r"for 5\.1s"):
        view.check(now=105.1)


def test_a_stopped_follower_refuses_at_once_and_counts_the_loss() -> None:
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=100)
    view.follower_stopped()
    with pytest.raises(ControlUnavailableError, match="stopped"):
        view.check(now=100.01)
    assert view.lost == 1
    view.confirmed(now=101)  # the restarted follower caught up again
    view.check(now=101)


def test_a_halt_is_applied_once_and_refuses_then_a_resume_lifts_it() -> None:
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=0)
    view.fold("a", halt("a"))
    change = view.change(())
    assert change is not None and change.halt is not None
    assert view.change(()) is None  # already applied
    with pytest.raises(HaltedError, match="halted by operator"):
        view.check(now=1)
    view.fold("a", halt("a", Action.RESUME))
    resumed = view.change(())
    assert resumed is not None and resumed.halt is None
    view.check(now=1)


def test_a_tombstone_lifts_nothing() -> None:
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=0)
    view.fold("a", halt("a"))
    view.fold("a", None)
    view.change(())
    with pytest.raises(HaltedError):
        view.check(now=1)


# -- routing and stamping --------------------------------------------------------------------


def test_a_capability_routes_to_a_running_agent_and_skips_halted_and_retired_ones() -> None:
    agents = {
        "r1": agent("r1", "research"),
        "r2": agent("r2", "research"),
        "r3": agent("r3", "research", AgentStatus.RETIRED),
    }
    book = HaltBook()
    book.apply("r1", halt("r1"))
    for task in ("t-1", "t-2", "t-3"):
        assert route(agents, book, AgentPolicy(), None, "research", task) == "r2"


def test_routing_refuses_unknown_recipients_and_policy_limits() -> None:
    agents = {"b": agent("b")}
    with pytest.raises(PolicyViolationError, match="not registered"):
        route(agents, HaltBook(), AgentPolicy(), "nobody", None, None)
    with pytest.raises(PolicyViolationError, match="exactly one"):
        route(agents, HaltBook(), AgentPolicy(), "b", "work", None)
    policy = AgentPolicy(allowed_recipients=frozenset({"c"}))
    with pytest.raises(PolicyViolationError, match="forbids sending"):
        route(agents, HaltBook(), policy, "b", None, None)
    with pytest.raises(PolicyViolationError, match="no registered, running agent"):
        route(agents, HaltBook(), AgentPolicy(), None, "poetry", None)


def test_a_reply_continues_the_chain_one_hop_further() -> None:
    first = stamp("a", "b", "t-1", None)
    reply = stamp("b", "a", None, first)
    assert reply.causation_id == first.message_id
    assert reply.correlation_id == first.correlation_id
    assert reply.task_id == "t-1"
    assert reply.hop_count == first.hop_count + 1
    assert first.traceparent is not None and first.traceparent.startswith("00-")


def test_telemetry_about_a_message_carries_its_causality() -> None:
    message = new_envelope("a", "b", task_id="t-9")
    envelope = telemetry_envelope("a", message)
    assert envelope.causation_id == message.message_id
    assert envelope.task_id == "t-9"
    body = telemetry_body("a", Kind.TOOL_CALL, "search", cost_usd=0.5)
    assert body["kind"] == "TOOL_CALL" and body["cost_usd"] == 0.5 and body["peer"] is None


# -- the supervisor --------------------------------------------------------------------------


async def test_a_failing_loop_is_restarted_and_its_exit_reported() -> None:
    supervisor = Supervisor("a", first_backoff_s=0.001)
    runs: list[int] = []
    exits: list[int] = []
    done = asyncio.Event()

    async def loop() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        done.set()
        await asyncio.Event().wait()  # then run until cancelled

    supervisor.spawn("flaky", loop, lambda: exits.append(1))
    await asyncio.wait_for(done.wait(), 5)
    await supervisor.stop()
    assert len(runs) == 3
    assert len(exits) == 2
    assert supervisor.restarts == {"flaky": 2}
    assert "RuntimeError: boom" in supervisor.last_error["flaky"]
