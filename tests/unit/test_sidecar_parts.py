"""The sidecar's parts with no broker: control view (halts, fail closed), routing, stamping,
telemetry and the supervisor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState, AgentStatus, registered_key
from mesh.domain.control import Action, HaltBook, Scope, control_record
from mesh.domain.dependencies import unknown_target
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import DLQ
from mesh.errors import (
    ConfigError,
    ControlUnavailableError,
    HaltedError,
    PolicyViolationError,
    RecipientError,
    ThrottledError,
)
from mesh.settings import Cluster, Settings
from sidecar.core import MESSAGE_SUBJECT, Sidecar
from sidecar.delivery import message_body
from sidecar.halts import ControlView
from sidecar.http import openapi
from sidecar.inbox import Counters, Inbox, Position
from sidecar.outbox import MemorySink, Outbox
from sidecar.plane import Plane
from sidecar.policy import AgentPolicy
from sidecar.routing import route, stamp
from sidecar.spec import AgentSpec
from sidecar.spend import SpendWindow
from sidecar.supervise import Supervisor
from sidecar.telemetry import Kind, telemetry_body, telemetry_envelope


def halt(target: str, action: Action = Action.HALT, lifts: str | None = None) -> dict[str, Any]:
    return control_record(
        action, Scope.AGENT, target, rule="operator", reason="test", requested_by="op", lifts=lifts
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
    first = halt("a")
    view.fold("a", first, "operator:alice")
    change = view.change(())
    assert change is not None and change.halt is not None
    assert view.change(()) is None  # already applied
    with pytest.raises(HaltedError, match="halted by operator"):
        view.check(now=1)
    view.fold("a", halt("a", Action.RESUME, lifts=first["command_id"]), "operator:alice")
    resumed = view.change(())
    assert resumed is not None and resumed.halt is None
    view.check(now=1)


def test_a_replayed_old_resume_leaves_a_newer_halt_in_force() -> None:
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=0)
    old = halt("a")
    view.fold("a", old, "operator:alice")
    old_resume = halt("a", Action.RESUME, lifts=old["command_id"])
    assert view.fold("a", old_resume, "operator:alice") is None  # lifts the old halt
    view.fold("a", halt("a"), "mesh")  # a newer halt, by the kill-switch
    why = view.fold("a", old_resume, "operator:alice")  # captured and produced again
    assert why is not None and "replayed or out-of-date" in why
    assert view.fold("a", old, "operator:alice") is not None  # the lifted halt, replayed: stale
    view.change(())
    with pytest.raises(HaltedError):
        view.check(now=1)


def test_a_command_written_twice_acts_once() -> None:
    """The CLI's one-shot producer may write a command twice (mesh.adapters.kafka.producing):
    the second halt is the same halt, applied once; the second resume finds nothing to lift."""
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=0)
    command = halt("a")
    for _ in range(2):
        assert view.fold("a", command, "operator:alice") is None
    assert (change := view.change(())) is not None and change.halt is not None
    assert view.change(()) is None  # the copy changed nothing to apply
    resume = halt("a", Action.RESUME, lifts=command["command_id"])
    assert view.fold("a", resume, "operator:alice") is None
    again = view.fold("a", resume, "operator:alice")
    assert again is not None and "nothing in force" in again
    assert (change := view.change(())) is not None and change.halt is None
    view.check(now=1)


def test_only_an_operator_lifts_a_halt_and_a_resume_must_name_it() -> None:
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=0)
    current = halt("a")
    view.fold("a", current, "mesh")
    by_mesh = view.fold("a", halt("a", Action.RESUME, lifts=current["command_id"]), "mesh")
    assert by_mesh is not None and "never resumes" in by_mesh
    unnamed = view.fold("a", halt("a", Action.RESUME), "operator:alice")
    assert unnamed is not None and "not" in unnamed
    assert view.book.halts["a"]["command_id"] == current["command_id"]
    assert len(view.book.stale) == 2


def test_a_tombstone_lifts_nothing() -> None:
    view = ControlView("a", stale_after_s=5)
    view.confirmed(now=0)
    view.fold("a", halt("a"), "operator:alice")
    assert view.fold("a", None) == "a tombstone changes nothing"
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
    with pytest.raises(RecipientError, match="not registered") as unknown:
        route(agents, HaltBook(), AgentPolicy(), "nobody", None, None)
    with pytest.raises(RecipientError, match="exactly one") as both:
        route(agents, HaltBook(), AgentPolicy(), "b", "work", None)
    policy = AgentPolicy(allowed_recipients=frozenset({"c"}))
    with pytest.raises(PolicyViolationError, match="forbids sending"):
        route(agents, HaltBook(), policy, "b", None, None)
    with pytest.raises(RecipientError, match="no registered, running agent") as nobody:
        route(agents, HaltBook(), AgentPolicy(), None, "poetry", None)
    rules = [unknown.value.rule, both.value.rule, nobody.value.rule]
    assert rules == ["unknown_recipient", "bad_recipient", "no_recipient"]


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


# -- the inbox and the outbox ----------------------------------------------------------------


def _codec() -> MessageCodec:
    return MessageCodec(Serde(InMemoryRegistry()), PublicKeys())


def _inbox(keys: dict[str, bytes]) -> tuple[Inbox, MemorySink]:
    codec = _codec()
    sink = MemorySink()
    outbox = Outbox("bob", AgentKey.generate("bob"), codec, "", sink)

    async def sender_key(sender: str) -> bytes:
        return registered_key(
            {a: AgentState(a, "t", "1", k, "{}") for a, k in keys.items()}, sender
        )

    return Inbox(codec, sender_key, outbox, "sidecar:test", Counters()), sink


def _sealed(codec: MessageCodec, key: AgentKey, message_id: str | None = None) -> bytes:
    envelope = new_envelope(key.agent_id, "bob", task_id="t-1")
    if message_id is not None:
        envelope = envelope._replace(message_id=message_id)
    return codec.seal(envelope, MESSAGE_SUBJECT, message_body("hi"), key)


AT = Position("mesh.inbox.bob.v1", 0)


async def test_a_verified_message_is_delivered_once_and_its_offset_is_due_when_acknowledged() -> (
    None
):
    alice = AgentKey.generate("alice")
    inbox, sink = _inbox({"alice": alice.public_bytes})
    value = _sealed(inbox.codec, alice, "m-1")
    await inbox.admit(AT, 0, b"t-1", value)
    await inbox.admit(AT, 1, b"t-1", value)  # redelivered: a duplicate
    assert inbox.counters.duplicates == 1
    assert inbox.due() == {}  # the duplicate is skipped, but the first is not taken yet
    got = await inbox.receive(timeout_s=1)
    assert got is not None and got.message_id == "m-1" and got.text() == "hi"
    assert await inbox.receive(timeout_s=0.01) is None
    assert inbox.due() == {}  # taken, not acknowledged: a crash now redelivers it
    assert inbox.ack("m-1") and not inbox.ack("m-1")
    assert inbox.due() == {AT: 2}
    assert sink.records == []


async def test_an_untaken_message_is_not_due_for_commit() -> None:
    alice = AgentKey.generate("alice")
    inbox, _ = _inbox({"alice": alice.public_bytes})
    await inbox.admit(AT, 0, b"t-1", _sealed(inbox.codec, alice))
    assert inbox.due() == {}  # a crash now redelivers it
    await inbox.receive(timeout_s=1, auto_ack=True)
    assert inbox.due() == {AT: 1}
    inbox.committed({AT: 1})
    assert inbox.due() == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x01junk", b"wrong_magic"),
        (b"", b"malformed"),
    ],
)
async def test_bad_bytes_are_dead_lettered_with_the_original(value: bytes, reason: bytes) -> None:
    inbox, sink = _inbox({})
    await inbox.admit(AT, 7, b"k", value)
    assert inbox.counters.dead_lettered == 1
    [(topic, key, letter)] = sink.records
    assert topic == DLQ and key == b"k"
    record = inbox.codec.serde.decode(letter).record
    assert record["original"] == value and record["source_offset"] == 7
    assert reason.decode() in record["reason_code"]
    assert inbox.due() == {AT: 8}


async def test_forged_and_unregistered_senders_are_dead_lettered() -> None:
    alice, mallory = AgentKey.generate("alice"), AgentKey.generate("alice")
    inbox, sink = _inbox({"alice": alice.public_bytes})
    await inbox.admit(AT, 0, b"t-1", _sealed(inbox.codec, mallory))  # alice's name, wrong key
    await inbox.admit(AT, 1, b"t-1", _sealed(inbox.codec, AgentKey.generate("eve")))
    codes = [inbox.codec.serde.decode(v).record["reason_code"] for _, _, v in sink.records]
    assert codes == ["bad_signature", "unknown_sender"]
    assert await inbox.receive(timeout_s=0.01) is None


# -- the spend budget --------------------------------------------------------------------------


def test_spend_exactly_at_the_budget_is_allowed_over_it_refused_and_the_window_slides() -> None:
    spend = SpendWindow(AgentPolicy(budget_usd=1.0, budget_window_s=60))
    spend.admit(0.6, now=0)
    spend.admit(0.4, now=30)  # exactly at the budget
    with pytest.raises(PolicyViolationError, match=r"over its budget of \$1\.00"):
        spend.admit(0.01, now=59)
    assert spend.total == pytest.approx(1.0)  # the refused spend was not recorded
    spend.admit(0.6, now=60)  # the first 0.6 left the window at t=60
    assert spend.total == pytest.approx(1.0)


async def test_a_paused_inbox_hands_nothing_over_and_delivers_everything_after_resume() -> None:
    alice = AgentKey.generate("alice")
    inbox, _ = _inbox({"alice": alice.public_bytes})
    inbox.pause()
    for offset in range(3):
        await inbox.admit(AT, offset, b"t-1", _sealed(inbox.codec, alice, f"m-{offset}"))
    assert await inbox.receive(timeout_s=0.05) is None
    assert inbox.due() == {}  # nothing taken, nothing committed: a crash redelivers
    inbox.resume()
    got = [await inbox.receive(timeout_s=1, auto_ack=True) for _ in range(3)]
    assert [d.message_id for d in got if d is not None] == ["m-0", "m-1", "m-2"]
    assert inbox.due() == {AT: 3}


async def test_a_message_taken_out_as_the_inbox_pauses_waits_first_in_line() -> None:
    alice = AgentKey.generate("alice")
    inbox, _ = _inbox({"alice": alice.public_bytes})
    waiting = asyncio.create_task(inbox.receive(timeout_s=0.2))
    await asyncio.sleep(0)
    inbox.pause()
    await inbox.admit(AT, 0, b"t-1", _sealed(inbox.codec, alice, "m-0"))
    await inbox.admit(AT, 1, b"t-1", _sealed(inbox.codec, alice, "m-1"))
    assert await waiting is None  # halted while waiting: nothing handed over
    inbox.resume()
    first = await inbox.receive(timeout_s=1)
    assert first is not None and first.message_id == "m-0"


def test_a_sidecar_without_trust_anchors_refuses_to_start(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match="no trust anchor"):
        Sidecar(Cluster(settings, "127.0.0.1:1"), Serde(InMemoryRegistry()), AgentSpec("a"))
    assert not (tmp_path / "state").exists()  # it minted no key of its own, not even the agent's


# -- the control plane: the start-up race ------------------------------------------------------


class _Record(NamedTuple):
    """What the follower hands the plane (aiokafka's ConsumerRecord, the fields used)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def test_a_halt_that_arrives_while_the_sidecar_starts_is_applied() -> None:
    operator = AgentKey.generate("operator:alice")
    codec, sink = _codec(), MemorySink()
    outbox = Outbox("a", AgentKey.generate("a"), codec, "", sink)
    signers = {
        "operator:alice": operator.public_bytes,
        "mesh": AgentKey.generate("mesh").public_bytes,
    }
    plane = Plane("a", (), codec, signers, outbox, Counters(), 5)
    seen: list[dict[str, Any] | None] = []
    plane.handlers.append(seen.append)

    def arrives(record: dict[str, Any], offset: int) -> None:
        value = seal_control(codec, operator, record, 0)
        plane._on_control(_Record("mesh.control.v2", 0, offset, b"a", value))  # type: ignore[arg-type]

    arrives(halt("a"), 0)  # read while catching up, before the agent registered
    assert seen == [] and plane.control.applied is None
    plane.applying_changes = True  # registered: the halt in force is applied now
    await plane.apply()
    assert seen and seen[-1] is not None
    second = halt("a")
    arrives(second, 1)  # arrives during the rest of start-up: applied as it arrives
    for _ in range(100):
        if plane.control.applied == second:
            break
        await asyncio.sleep(0.01)
    assert plane.control.applied == second
    kinds = [codec.serde.decode(v).record for _, _, v in sink.records]
    assert len(kinds) == 2  # each halt acknowledged (HALT_ACK) once


def test_a_halt_of_an_unknown_agent_or_capability_names_the_close_ones() -> None:
    agents = {"research-a": agent("research-a", "research"), "drafting": agent("drafting")}
    assert unknown_target(agents, False, "research-a") is None
    why = unknown_target(agents, False, "research-b")
    assert why == "no registered agent is called 'research-b'; did you mean research-a?"
    assert unknown_target(agents, True, "research") is None
    assert unknown_target(agents, True, "poetry") == "no registered capability is called 'poetry'"


async def test_a_message_given_back_or_not_acknowledged_in_time_is_delivered_again() -> None:
    alice = AgentKey.generate("alice")
    now = [0.0]
    inbox, _ = _inbox({"alice": alice.public_bytes})
    inbox.ack_timeout_s, inbox.clock = 30.0, lambda: now[0]
    for offset in range(2):
        await inbox.admit(AT, offset, b"t-1", _sealed(inbox.codec, alice, f"m-{offset}"))
    first = await inbox.receive(timeout_s=1)
    assert first is not None and inbox.nack(first.message_id)  # the agent gives it back
    again = await inbox.receive(timeout_s=1)
    assert again is not None and again.message_id == "m-0"  # first in line, not after m-1
    second = await inbox.receive(timeout_s=1)
    assert second is not None and second.message_id == "m-1"
    assert inbox.ack("m-1") and inbox.due() == {}  # m-0 is still outstanding: nothing due
    now[0] = 31.0  # the agent died holding m-0
    late = await inbox.receive(timeout_s=1)
    assert late is not None and late.message_id == "m-0" and inbox.counters.redelivered == 2
    assert inbox.ack("m-0") and inbox.due() == {AT: 2}


async def test_what_the_agent_held_when_it_was_halted_is_delivered_again_after_the_resume() -> None:
    alice = AgentKey.generate("alice")
    inbox, _ = _inbox({"alice": alice.public_bytes})
    await inbox.admit(AT, 0, b"t-1", _sealed(inbox.codec, alice, "m-0"))
    held = await inbox.receive(timeout_s=1)  # taken; then the halt stops the agent mid-work
    assert held is not None
    inbox.pause()
    assert await inbox.receive(timeout_s=0.05) is None and inbox.due() == {}
    inbox.resume()
    again = await inbox.receive(timeout_s=1)
    assert again is not None and again.message_id == "m-0"
    assert inbox.ack("m-0") and inbox.due() == {AT: 1}


def test_the_openapi_description_names_every_status_the_api_returns() -> None:
    spec = openapi()["paths"]
    every = {"400", "401", "403", "409", "422", "500", "503"}  # the guard's refusals and errors
    for path, ops in spec.items():
        if path == "/openapi.json":
            continue
        for method, op in ops.items():
            assert every <= set(op["responses"]), f"{method.upper()} {path}"
    assert "204" in spec["/v1/messages/next"]["get"]["responses"]  # nothing arrived in time
    assert "404" in spec["/v1/tasks/{task_id}/context"]["get"]["responses"]  # an unknown task


def test_only_a_throttle_the_mesh_signed_throttles_the_agent() -> None:
    """A throttle forged by an operator's key, an agent's or a stranger's is ignored and
    counted; the mesh's own throttles until it lapses."""
    mesh, operator = AgentKey.generate("mesh"), AgentKey.generate("operator:alice")
    codec = _codec()
    outbox = Outbox("a", AgentKey.generate("a"), codec, "", MemorySink())
    signers = {"mesh": mesh.public_bytes, "operator:alice": operator.public_bytes}
    plane = Plane("a", (), codec, signers, outbox, Counters(), 5)
    body = {"kind": "TOOL_CALL", "until": 10_000, "observed": 9, "limit": 5, "window_s": 10.0,
            "reason": "too many", "evidence": []}  # fmt: skip

    def arrives(key: AgentKey, sender: str, offset: int) -> None:
        envelope = new_envelope(sender, "", recipient_kind=RecipientKind.BROADCAST)
        value = codec.seal(envelope, "mesh.killswitch.Throttle", body, key)
        plane._on_throttle(_Record("mesh.throttles.v1", 0, offset, b"TOOL_CALL", value))  # type: ignore[arg-type]

    arrives(operator, "operator:alice", 0)
    arrives(AgentKey.generate("mesh"), "mesh", 1)  # claims the mesh, another key
    plane.check_throttle("TOOL_CALL", now_ms=5_000)  # nothing in force
    assert plane.counters.untrusted_controls == 2
    arrives(mesh, "mesh", 2)
    with pytest.raises(ThrottledError, match=r"too many; retry in 5\.0s") as throttled:
        plane.check_throttle("TOOL_CALL", now_ms=5_000)
    assert throttled.value.retry_after_s == 5.0
    plane.check_throttle("TOOL_CALL", now_ms=10_000)  # lapsed
    plane.check_throttle("MODEL_CALL", now_ms=5_000)  # another kind
