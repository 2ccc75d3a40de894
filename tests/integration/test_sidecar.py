"""Sidecars on the real broker, with the registry, state and kill-switch processors running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from mesh.adapters.commands import read_halts
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.kafka.partitioning import partition_for
from mesh.adapters.keyfiles import control_signers, mesh_anchor, mesh_key, operator_key
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agent_record import to_record
from mesh.domain.control import Action, Scope, control_key, control_record
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.identity import AgentKey
from mesh.domain.keys import KEY_STATEMENT_SUBJECT, KeyStatement, KeyStatus, countersign
from mesh.domain.policies import canonical
from mesh.domain.topics import (
    CONTROL,
    DLQ,
    KEYS,
    POLICIES,
    REGISTRY,
    REGISTRY_EVENTS,
    TELEMETRY,
    inbox_topic,
)
from mesh.errors import (
    ControlUnavailableError,
    HaltedError,
    PolicyViolationError,
    RecipientError,
    RecordEncodeError,
)
from mesh.settings import Cluster, Settings
from processors.registry import AgentStatus, RegistryProcessor
from processors.runtime.engine import Engine
from processors.state import StateProcessor
from sidecar.core import Sidecar
from sidecar.http import SidecarServer, new_token
from sidecar.policy import AgentPolicy
from sidecar.spec import AgentSpec
from tests.integration.fleet import Sent, codec_for, killswitch_engine, produce, read_all, running
from tests.integration.test_cli import run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Mesh:
    settings: Settings
    codec: MessageCodec

    def sidecar(self, agent_id: str, profile: str = "development", **spec: Any) -> Sidecar:
        """A sidecar in the development profile unless told: the agents' own policies stand in
        for an operator's (production's default deny has tests of its own)."""
        return Sidecar(
            Cluster.of(self.settings.with_overrides(profile=profile)),
            self.codec.serde,
            AgentSpec(agent_id, **spec),
            heartbeat_s=1.0,
            key_wait_s=2.0,
        )

    def topic(self, name: str) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
        return read_all(self.settings, name, self.settings.partitions)

    def dead_letters(self) -> list[dict[str, Any]]:
        return [self.codec.serde.decode(v).record for _, v, _ in self.topic(DLQ)]

    def telemetry(self, kind: str) -> list[dict[str, Any]]:
        bodies = [self.codec.open(v, verify=False).body for _, v, _ in self.topic(TELEMETRY)]
        return [b for b in bodies if b["kind"] == kind]


def registry_processor(settings: Settings) -> RegistryProcessor:
    """The registry as `mesh processors run` builds it: the mesh's key, the operator's key."""
    operator = operator_key(settings)
    return RegistryProcessor(
        mesh_key(settings), operator_keys={operator.agent_id: operator.public_bytes}
    )


@pytest.fixture
def mesh(settings: Settings, topics: object) -> Iterator[Mesh]:
    settings = settings.with_overrides(max_message_bytes=64 * 1024)  # an oversize case fits Kafka
    codec, registry = codec_for(settings)
    bootstrap = settings.bootstrap_servers or ""
    killswitch = killswitch_engine(settings, codec, {"agent": {"max_cost_per_minute": 1.0}})
    engines = [
        Engine.keyed(registry_processor(settings), Cluster(settings, bootstrap), codec),
        Engine.keyed(StateProcessor(), Cluster(settings, bootstrap), codec),
        killswitch,
    ]
    with running(engines):
        yield Mesh(settings, codec)
    registry.close()


async def test_two_agents_exchange_signed_messages_and_duplicates_are_dropped(mesh: Mesh) -> None:
    async with mesh.sidecar("alice") as alice, mesh.sidecar("bob", capabilities=("review",)) as bob:
        await _until(lambda: {"alice", "bob"} <= set(alice.agents()), "both registered")
        sent = await alice.send("bob", text="draft ready", task_id="t-1")
        got = await bob.receive(timeout_s=10)
        assert got is not None and got.message_id == sent and got.sender == "alice"
        assert got.text() == "draft ready" and got.task_id == "t-1" and got.envelope.hop_count == 0
        reply = await bob.send(got.sender, text="approved", reply_to=got)
        back = await alice.receive(timeout_s=10)
        assert back is not None and back.message_id == reply
        assert back.envelope.causation_id == sent and back.envelope.hop_count == 1
        assert back.task_id == "t-1"
        by_capability = await alice.send(capability="review", data={"n": 1}, task_id="t-2")
        routed = await bob.receive(timeout_s=10)
        assert routed is not None and routed.message_id == by_capability
        assert routed.data() == {"n": 1}
        deadline = time.monotonic() + 15  # the state projections saw who talked on each task
        while (talked := [await bob.context(t) for t in ("t-1", "t-2")]) and any(
            sorted((c or {}).get("participants", [])) != ["alice", "bob"] for c in talked
        ):
            assert time.monotonic() < deadline, f"task participants from messages: {talked}"
            await asyncio.sleep(0.1)

        raw = [v for _, v, _ in mesh.topic(inbox_topic("bob").name)]
        produce(mesh.settings, [Sent(inbox_topic("bob").name, "t-1", raw[0])])  # replayed
        await _until(lambda: bob.counters.duplicates == 1, "the duplicate dropped")
        assert await bob.receive(timeout_s=0.5) is None


async def test_bad_records_in_an_inbox_go_to_the_dead_letter_topic(mesh: Mesh) -> None:
    async with mesh.sidecar("alice") as alice, mesh.sidecar("bob") as bob:
        await _until(lambda: {"alice", "bob"} <= set(bob.agents()), "both registered")
        inbox = inbox_topic("bob").name
        impostor = AgentKey.generate("alice")  # claims to be alice, signs with another key
        stranger = AgentKey.generate("mallory")  # never registered
        codec = mesh.codec
        body = {"role": "AGENT", "parts": [], "metadata": {}}
        forged = codec.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", body, impostor)
        unregistered = codec.seal(
            new_envelope("mallory", "bob"), "mesh.a2a.Message", body, stranger
        )
        unknown_schema = b"\x00" + struct.pack(">I", 987654) + b"\x02ab"
        malformed = b'{"plain": "json"}'
        oversize = b"\x00" + b"x" * (mesh.settings.max_message_bytes + 10)
        bad = [forged, unregistered, unknown_schema, malformed, oversize]
        produce(mesh.settings, [Sent(inbox, "k", v) for v in bad])
        good = await alice.send("bob", text="real")
        got = await bob.receive(timeout_s=15)
        assert got is not None and got.message_id == good  # the only thing bob ever sees
        await _until(lambda: bob.counters.dead_lettered == len(bad), "refusals")
        assert bob.supervisor.restarts == {}
        letters = {letter["original"]: letter for letter in mesh.dead_letters()}
        assert set(letters) == set(bad)
        assert letters[forged]["reason_code"] == "bad_signature"
        assert letters[unregistered]["reason_code"] == "unknown_sender"
        assert letters[unknown_schema]["reason_code"] == "unknown_schema_id"
        assert letters[malformed]["reason_code"] in {"malformed", "wrong_magic_byte"}
        assert letters[oversize]["reason_code"] == "oversize"
        assert all(x["source_topic"].endswith(inbox) for x in letters.values())
        assert "mallory" in letters[unregistered]["reason"]


async def test_each_policy_violation_is_refused_reported_and_nothing_is_sent(mesh: Mesh) -> None:
    policy = AgentPolicy(
        allowed_recipients=frozenset({"bob"}),
        allowed_capabilities=frozenset({"review"}),
        allowed_tools=frozenset({"search"}),
        budget_usd=0.5,
        budget_window_s=60,
        max_hop_count=0,
        max_message_bytes=2048,
    )
    async with mesh.sidecar("alice", policy=policy) as alice, mesh.sidecar("bob") as bob:
        async with mesh.sidecar("carol"):
            await _until(lambda: {"bob", "carol"} <= set(alice.agents()), "registrations")
            first = await alice.send("bob", text="hi")
            got = await bob.receive(timeout_s=10)
            assert got is not None and got.message_id == first
            refusals = {
                "recipient_not_allowed": alice.send("carol", text="hi"),
                "capability_not_allowed": alice.send(capability="drafting", text="hi"),
                "tool_not_allowed": alice.permit_tool("shell", {"cmd": "rm"}),
                "budget_exceeded": alice.report_model_call("m", cost_usd=0.6),
                "hop_limit": alice.send("bob", text="re", reply_to=got),
                "message_too_large": alice.send("bob", text="x" * 4096),
            }
            for rule, call in refusals.items():
                with pytest.raises(PolicyViolationError) as caught:
                    await call
                assert caught.value.rule == rule, (rule, str(caught.value))
            with pytest.raises(RecipientError) as misaddressed:  # not a policy question
                await bob.send("nobody", text="hi")
            assert misaddressed.value.rule == "unknown_recipient"
            with pytest.raises(RecordEncodeError, match="unknown field"):
                await alice.send("bob", {"role": "AGENT", "parts": [], "x": 1})
            permit = await alice.permit_tool("search", {"q": "kafka"}, cost_usd=0.4)
            await alice.report_tool_call("search", {"q": "kafka"}, permit=permit)
            with pytest.raises(PolicyViolationError, match="over its budget"):
                await alice.permit_tool("search", {"q": "more"}, cost_usd=0.2)
        assert await bob.receive(timeout_s=1) is None
        reported = {r["detail"].split(":")[0] for r in mesh.telemetry("SEND_REFUSED")}
        assert set(refusals) | {"record_encode", "unknown_recipient"} <= reported, reported


async def test_a_halt_outlives_a_sidecar_restart_and_a_resume_restores_service(
    mesh: Mesh,
) -> None:
    async with mesh.sidecar("bob") as bob:
        runaway = mesh.sidecar("runaway")
        await runaway.start()
        seen: list[dict[str, Any] | None] = []
        runaway.on_halt(seen.append)
        await _until(lambda: "runaway" in bob.agents(), "registration")
        # The kill-switch needs no wait: a sender missing from its registry table makes the
        # runtime read the table to its end before the telemetry is judged.
        await _until(lambda: "runaway" in runaway.agents(), "the registry's record of it")
        for _ in range(3):
            await runaway.report_model_call("big-model", cost_usd=0.6)
        await _until(lambda: seen, "the kill-switch's halt handed to the agent", 20)
        assert runaway.halt is not None and runaway.halt["rule"] == "spend_per_minute"
        assert seen and seen[-1] == runaway.halt
        with pytest.raises(HaltedError, match="halted by spend_per_minute"):
            await runaway.send("bob", text="one more")
        with pytest.raises(HaltedError):
            await runaway.permit_tool("search", {})
        await _until(lambda: status(bob, "runaway") is AgentStatus.HALTED, "registry: HALTED")
        await runaway.stop(deregister=False)

        again = mesh.sidecar("runaway")
        await again.start()
        try:
            assert again.halt is not None  # in force before the agent could do anything
            with pytest.raises(HaltedError):
                await again.send("bob", text="after restart")
            assert any(r["name"] == "spend_per_minute" for r in mesh.telemetry("HALT_ACK"))
            waiting = [await bob.send("runaway", text=f"while halted {n}") for n in range(2)]
            assert await again.receive(timeout_s=2) is None  # a halted agent receives nothing
            operator = operator_key(mesh.settings)
            resume = control_record(
                Action.RESUME,
                Scope.AGENT,
                "runaway",
                rule="operator",
                reason="fixed",
                requested_by=operator.agent_id,
                lifts=again.halt["command_id"],
            )
            now_ms = int(time.time() * 1000)
            impostor = AgentKey.generate(operator.agent_id)  # the operator's name, not its key
            forged = seal_control(mesh.codec, impostor, resume, now_ms)
            produce(mesh.settings, [Sent(CONTROL, control_key(Scope.AGENT, "runaway"), forged)])
            await _until(lambda: again.counters.untrusted_controls == 1, "the forgery seen")
            assert again.halt is not None  # ignored: still halted
            with pytest.raises(HaltedError):
                await again.send("bob", text="resumed by a forgery?")
            value = seal_control(mesh.codec, operator, resume, now_ms)
            produce(mesh.settings, [Sent(CONTROL, control_key(Scope.AGENT, "runaway"), value)])
            await _until(lambda: again.halt is None, "the resume")
            delivered = [await again.receive(timeout_s=10) for _ in waiting]
            assert [d.message_id for d in delivered if d is not None] == waiting  # all, in order
            await _until(lambda: status(bob, "runaway") is AgentStatus.LIVE, "registry: LIVE")
            sent = await again.send("bob", text="back")
            got = await bob.receive(timeout_s=10)
            assert got is not None and got.message_id == sent

            for _ in range(3):  # runs away again: a newer halt
                with contextlib.suppress(HaltedError):
                    await again.report_model_call("big-model", cost_usd=0.6)
            await _until(lambda: again.halt is not None, "the second halt", 20)
            stale = again.counters.stale_controls
            produce(mesh.settings, [Sent(CONTROL, control_key(Scope.AGENT, "runaway"), value)])
            await _until(lambda: again.counters.stale_controls == stale + 1, "the replay seen")
            assert again.halt is not None  # the captured resume, produced again, lifts nothing
            with pytest.raises(HaltedError):
                await again.send("bob", text="resumed by a replay?")
        finally:
            await again.stop()


def status(sidecar: Sidecar, agent_id: str) -> AgentStatus | None:
    agent = sidecar.agents().get(agent_id)
    return agent.status if agent is not None else None


async def test_a_sidecar_that_cannot_follow_control_refuses_until_it_has_caught_up(
    mesh: Mesh,
) -> None:
    async with mesh.sidecar("carol") as carol:
        await _until(lambda: "carol" in carol.agents(), "carol's own registration")
        await carol.send("carol", text="before")
        carol.supervisor.first_backoff_s = 1.0  # a window wide enough to act in
        follower = carol.follower
        assert follower is not None
        await follower._consumer.stop()  # the follower's client dies under it
        await _until(lambda: not carol.control.following, "the dead follower noticed")
        assert not carol.healthy()
        with pytest.raises(ControlUnavailableError, match="follower of the control topic"):
            await carol.send("carol", text="while blind")
        with pytest.raises(ControlUnavailableError):
            await carol.permit_tool("search")
        await _until(carol.healthy, "the restarted follower caught up")
        assert carol.supervisor.restarts == {"control follower": 1}
        assert carol.control.lost == 1
        await carol.send("carol", text="after")
        assert carol.counters.refused == 2


async def _until(condition: Any, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_node_agent_round_trips_through_the_http_api(mesh: Mesh) -> None:
    shouter = mesh.sidecar(
        "shouter",
        capabilities=("shout",),
        policy=AgentPolicy(allowed_tools=frozenset({"uppercase"})),
    )
    token = new_token()
    server = SidecarServer(shouter, token)
    await shouter.start()
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/v1/health")).status_code == 401
            auth = {"authorization": f"Bearer {token}"}
            refused = await http.post("/v1/tools/permits", headers=auth, json={"tool": "shell"})
            assert refused.status_code == 403 and refused.json()["rule"] == "tool_not_allowed"
            unpermitted = await http.post(
                "/v1/telemetry/tool-calls", headers=auth, json={"tool": "uppercase"}
            )
            assert unpermitted.status_code == 403 and unpermitted.json()["rule"] == "no_permit"
            misspelt = await http.post(
                "/v1/tools/permits", headers=auth, json={"tool": "uppercase", "cost": 1}
            )
            assert misspelt.status_code == 400 and "unknown field 'cost'" in misspelt.text
            bad = await http.post("/v1/messages", headers=auth, content=b"{not json")
            assert bad.status_code == 400
        agent = await asyncio.create_subprocess_exec(
            "node",
            str(EXAMPLES / "node-agent" / "agent.js"),
            env={
                "PATH": os.environ["PATH"],
                "MESH_SIDECAR_URL": url,
                "MESH_SIDECAR_TOKEN": token,
                "MAX_MESSAGES": "2",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with mesh.sidecar("alice") as alice:
            await _until(lambda: "shouter" in alice.agents(), "shouter registered")
            first = await alice.send("shouter", text="hello mesh", task_id="t-9")
            await alice.send(capability="shout", text="second")
            replies = [await alice.receive(timeout_s=20) for _ in range(2)]
        output, _ = await asyncio.wait_for(agent.communicate(), 30)
        assert agent.returncode == 0, output.decode()
        texts = sorted(r.text() for r in replies if r is not None)
        assert texts == ["HELLO MESH", "SECOND"], output.decode()
        answer = next(r for r in replies if r is not None and r.text() == "HELLO MESH")
        assert answer.envelope.causation_id == first and answer.task_id == "t-9"
        tools = [t for t in mesh.telemetry("TOOL_CALL") if t["agent_id"] == "shouter"]
        assert [t["name"] for t in tools] == ["uppercase", "uppercase"]
        permits = {
            t["permit_id"] for t in mesh.telemetry("TOOL_PERMIT") if t["agent_id"] == "shouter"
        }
        assert {t["permit_id"] for t in tools} == permits and len(permits) == 2  # each call's own
    finally:
        await server.stop()
        await shouter.stop()


async def test_a_message_held_when_the_agent_is_halted_is_delivered_again_after_the_resume(
    mesh: Mesh,
) -> None:
    """Issue 17, defect 3: at-least-once delivery with an explicit acknowledgement. The agent
    takes a message over HTTP, is halted before it finishes (its report is refused) and never
    acknowledges: after the resume the sidecar delivers the message again."""
    shouter = mesh.sidecar("shouter")
    token = new_token()
    server = SidecarServer(shouter, token)
    await shouter.start()
    url = await server.start()
    auth = {"authorization": f"Bearer {token}"}
    try:
        async with mesh.sidecar("alice") as alice, httpx.AsyncClient(base_url=url) as http:
            await _until(lambda: "shouter" in alice.agents(), "shouter registered")
            sent = await alice.send("shouter", text="finish me")
            taken = await http.get("/v1/messages/next?timeout_s=15", headers=auth)
            assert taken.status_code == 200 and taken.json()["message_id"] == sent
            halted = await asyncio.to_thread(
                run, ["halt", "shouter", "--reason", "drill", "--wait"], mesh.settings
            )
            assert halted.returncode == 0, halted.stdout + halted.stderr
            refused = await http.post("/v1/tools/permits", headers=auth, json={"tool": "uppercase"})
            assert refused.status_code == 409 and refused.json()["rule"] == "halted"
            health = (await http.get("/v1/health", headers=auth)).json()
            assert health["status"] == "HALTED"  # the registry's word for it (issue 17)
            nothing = await http.get("/v1/messages/next?timeout_s=0.5", headers=auth)
            assert nothing.status_code == 204  # halted: nothing is handed out

            resumed = await asyncio.to_thread(
                run, ["resume", "shouter", "--reason", "drill over"], mesh.settings
            )
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
            await _until(lambda: shouter.halt is None, "the resume applied")
            assert (await http.get("/v1/health", headers=auth)).json()["status"] == "LIVE"
            again = await http.get("/v1/messages/next?timeout_s=15", headers=auth)
            assert again.status_code == 200 and again.json()["message_id"] == sent
            acked = await http.post(f"/v1/messages/{sent}/ack", headers=auth)
            assert acked.status_code == 204
            twice = await http.post(f"/v1/messages/{sent}/ack", headers=auth)
            assert twice.status_code == 404 and twice.json()["error"] == "not_outstanding"
            assert shouter.counters.redelivered == 1
    finally:
        await server.stop()
        await shouter.stop()


async def test_nothing_written_under_the_fleet_key_erases_a_fleet_halt(mesh: Mesh) -> None:
    """A fleet halt, then junk, a tombstone and a forged resume under `*`: a sidecar that
    starts afterwards is halted, `mesh halts` shows the halt, and the topic can never be
    compacted (it is kept whole), so no later record can take the halt's place."""
    cluster = Cluster.of(mesh.settings)
    operator = operator_key(mesh.settings)
    halt = control_record(
        Action.HALT,
        Scope.FLEET,
        "*",
        rule="operator",
        reason="drill",
        requested_by=operator.agent_id,
    )
    signed = seal_control(mesh.codec, operator, halt, int(time.time() * 1000))
    forged_resume = control_record(
        Action.RESUME, Scope.FLEET, "*", rule="operator", reason="let me go",
        requested_by=operator.agent_id, lifts=halt["command_id"],
    )  # fmt: skip
    impostor = AgentKey.generate(operator.agent_id)
    forged = seal_control(mesh.codec, impostor, forged_resume, int(time.time() * 1000))
    produce(
        mesh.settings,
        [Sent(CONTROL, "*", signed), Sent(CONTROL, "*", b"junk"), Sent(CONTROL, "*", forged)],
    )
    produce_tombstone(mesh.settings, "*")

    late = mesh.sidecar("late")
    await late.start()
    try:
        assert late.halt is not None and late.halt["command_id"] == halt["command_id"]
        with pytest.raises(HaltedError):
            await late.permit_tool("search", {})
        assert late.counters.untrusted_controls == 2  # the junk and the forgery
        assert late.counters.stale_controls == 1  # the tombstone
        # an agent with no sidecar to acknowledge anything registers during the fleet halt:
        # the registry admits it HALTED
        quiet = AgentKey.generate("quiet")
        body = {"agent_id": "quiet", "owner": "ops", "version": "1",
                "public_key": quiet.public_bytes, "agent_card_json": "{}"}  # fmt: skip
        envelope = new_envelope("quiet", "", recipient_kind=RecipientKind.BROADCAST)
        sealed = mesh.codec.seal(envelope, "mesh.registry.AgentRegistered", body, quiet)
        produce(mesh.settings, [Sent(REGISTRY_EVENTS, "quiet", sealed)])
        await _until(lambda: status(late, "quiet") is AgentStatus.HALTED, "quiet admitted HALTED")
    finally:
        await late.stop()
    found = read_halts(cluster, mesh.codec, control_signers(mesh.settings))
    assert list(found.halts) == ["*"]
    assert len(found.ignored) == 3
    configs = TopicAdmin(cluster).topic_configs([cluster.topic(CONTROL)])[cluster.topic(CONTROL)]
    assert (configs["cleanup.policy"], configs["retention.ms"]) == ("delete", "-1")


def produce_tombstone(settings: Settings, key: str) -> None:
    producer = Producer(producer_config(Cluster.of(settings)))
    producer.produce(Cluster.of(settings).topic(CONTROL), None, key.encode())
    assert producer.flush(15) == 0


async def test_a_fleet_halt_with_wait_names_each_instance_that_never_acknowledges(
    mesh: Mesh,
) -> None:
    ghost = AgentKey.generate("ghost")  # registered, running as far as the registry knows,
    registration = {  # but with no sidecar that could apply a halt
        "agent_id": "ghost",
        "owner": "ops",
        "version": "1",
        "public_key": ghost.public_bytes,
        "agent_card_json": "{}",
    }
    envelope = new_envelope("ghost", "", recipient_kind=RecipientKind.BROADCAST)
    sealed = mesh.codec.seal(envelope, "mesh.registry.AgentRegistered", registration, ghost)
    produce(mesh.settings, [Sent(REGISTRY_EVENTS, "ghost", sealed)])
    async with mesh.sidecar("steady") as steady:
        await _until(lambda: {"ghost", "steady"} <= set(steady.agents()), "both registered")
        zombie = {"agent_id": "steady", "instance_id": "steady-zombie", "sequence": 1}
        envelope = new_envelope("steady", "", recipient_kind=RecipientKind.BROADCAST)
        beat = mesh.codec.seal(envelope, "mesh.registry.Heartbeat", zombie, steady.key)
        produce(mesh.settings, [Sent(REGISTRY_EVENTS, "steady", beat)])  # a second replica
        await _until(
            lambda: (
                {i for i, _ in steady.plane.agents["steady"].instances}
                == {steady.instance_id, "steady-zombie"}
            ),
            "both steady instances in the registry",
        )
        args = ["halt", "--fleet", "--reason", "drill", "--wait", "--deadline", "4"]
        result = await asyncio.to_thread(run, args, mesh.settings)
        assert result.returncode == 1, result.stdout + result.stderr
        out = " ".join(result.stdout.split())
        assert f"acknowledged by: steady/{steady.instance_id}" in out
        assert "no acknowledgement within 4s from: ghost, steady/steady-zombie" in out
        assert steady.halt is not None and steady.halt["scope"] == "FLEET"


# -- the key directory (issue 19): forged keys ignored, revoked keys refused -----------------

RECORD_SUBJECT = "mesh.registry.AgentRecord"
KEYS_BODY = {"role": "AGENT", "parts": [], "metadata": {}}


def dead_letter_reasons(mesh: Mesh) -> list[tuple[str, str]]:
    return [(d["reason_code"], d["reason"]) for d in mesh.dead_letters()]


async def test_a_key_forged_into_the_registry_topic_or_the_directory_is_ignored(
    mesh: Mesh,
) -> None:
    quiet = Sidecar(  # no heartbeats: the registry leaves alice's record alone
        Cluster.of(mesh.settings.with_overrides(profile="development")),
        mesh.codec.serde,
        AgentSpec("alice"),
        heartbeat_s=3600,
    )
    async with quiet as alice, mesh.sidecar("bob") as bob:
        await _until(lambda: {"alice", "bob"} <= set(bob.agents()), "both registered")
        await _until(lambda: bob.plane.keys.get("alice") is not None, "alice's key vouched for")
        attacker = AgentKey.generate("alice")
        serde = mesh.codec.serde
        forged_record = replace(bob.plane.agents["alice"], public_key=attacker.public_bytes)
        forged = countersign(  # signed, but not with the mesh's key
            KeyStatement("alice", attacker.public_bytes, 99, KeyStatus.ACTIVE, "forged", 1),
            AgentKey.generate("mesh"),
        )
        produce(
            mesh.settings,
            [
                Sent(REGISTRY, "alice", serde.encode(RECORD_SUBJECT, to_record(forged_record))),
                Sent(KEYS, "alice", serde.encode(KEY_STATEMENT_SUBJECT, forged.to_record())),
            ],
        )
        await _until(lambda: bob.counters.untrusted_keys == 1, "the forged statement ignored")
        await _until(
            lambda: bob.plane.agents["alice"].public_key == attacker.public_bytes,
            "the forged registry record read (it is not where keys come from)",
        )
        assert await bob.plane.sender_key("alice", 0) == alice.key.public_bytes
        impostor = mesh.codec.seal(
            new_envelope("alice", "bob"), "mesh.a2a.Message", KEYS_BODY, attacker
        )
        produce(mesh.settings, [Sent(inbox_topic("bob").name, "k", impostor)])
        real = await alice.send("bob", text="the real alice")
        got = await bob.receive(timeout_s=15)
        assert got is not None and got.message_id == real  # the impostor never gets through
        await _until(lambda: bob.counters.dead_lettered == 1, "the impostor dead-lettered")
        assert dead_letter_reasons(mesh)[0][0] == "bad_signature"

        keys = read_keys(Cluster.of(mesh.settings), serde, mesh_anchor(mesh.settings))
        assert keys.key_for("alice") == alice.key.public_bytes


async def test_a_revoked_keys_messages_are_refused_and_the_agent_quarantined(mesh: Mesh) -> None:
    async with mesh.sidecar("alice") as alice, mesh.sidecar("bob") as bob:
        await _until(lambda: {"alice", "bob"} <= set(bob.agents()), "both registered")
        await _until(lambda: bob.plane.keys.get("alice") is not None, "alice's key vouched for")
        revoked = run(["keys", "revoke", "alice", "--reason", "key leaked"], mesh.settings)
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        assert "revoked: alice: revoked key" in revoked.stdout and "(serial 2)" in revoked.stdout
        await _until(
            lambda: (
                bob.plane.agents.get("alice") is not None
                and bob.plane.agents["alice"].status.value == "QUARANTINED"
            ),
            "alice quarantined in the registry",
        )
        await _until(lambda: bob.plane.keys.get("alice").serial == 2, "bob read the revocation")

        message = mesh.codec.seal(
            new_envelope("alice", "bob"), "mesh.a2a.Message", KEYS_BODY, alice.key
        )
        produce(mesh.settings, [Sent(inbox_topic("bob").name, "k", message)])
        await _until(lambda: bob.counters.dead_lettered == 1, "the revoked key's message refused")
        assert await bob.receive(timeout_s=0.5) is None
        inbox = mesh.settings.topic_prefix + inbox_topic("bob").name
        [(code, reason)] = [
            (d["reason_code"], d["reason"])
            for d in mesh.dead_letters()
            if d["source_topic"] == inbox
        ]
        assert code == "revoked_key" and "was revoked (KeyRevoked: key leaked)" in reason

        listed = run(["keys", "list"], mesh.settings)
        assert "alice: revoked key" in listed.stdout and "bob: active key" in listed.stdout

        new_key = mesh.settings.state_dir / "alice-new.key"
        rotated = run(["keys", "rotate", "alice", "--key-file", str(new_key)], mesh.settings)
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        assert "rotated: alice: active key" in rotated.stdout and "(serial 3)" in rotated.stdout
        await _until(
            lambda: bob.plane.agents["alice"].status.value == "LIVE", "alice out of quarantine"
        )

        again = run(["keys", "revoke", "nobody", "--reason", "x"], mesh.settings)
        assert (
            again.returncode == 1
            and "vouches for no key of 'nobody'" in again.stdout + again.stderr
        )


async def test_a_sidecar_that_requires_the_killswitch_refuses_spend_while_it_is_gone(
    settings: Settings, topics: object
) -> None:
    """Issue 14, fail closed by policy: with ``require_killswitch_s``, spend-bearing calls
    wait for the kill-switch's heartbeat (``mesh.killswitch`` in the registry)."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    policy = AgentPolicy(require_killswitch_s=3.0)
    with running([Engine.keyed(registry_processor(settings), Cluster.of(settings), codec)]):
        async with mesh.sidecar("spender", policy=policy) as spender:
            await spender.report_model_call("m", cost_usd=0.0)  # no spend: never waits
            with pytest.raises(ControlUnavailableError, match="has never been seen"):
                await spender.report_model_call("m", cost_usd=0.01)
            killswitch = killswitch_engine(settings, codec, {})
            with running([killswitch]):
                await _until(
                    lambda: "mesh.killswitch" in spender.agents(), "the kill-switch's heartbeat"
                )
                await spender.report_model_call("m", cost_usd=0.01)  # seen: spend goes on
                listed = await asyncio.to_thread(run, ["agents", "ls"], settings)
                assert "mesh.killswitch" in listed.stdout
            await asyncio.sleep(4.0)  # gone for longer than the policy allows
            with pytest.raises(ControlUnavailableError, match="was last seen"):
                await spender.report_model_call("m", cost_usd=0.01)
    registry.close()


async def test_an_agent_rotates_its_own_key_and_its_peers_follow(mesh: Mesh) -> None:
    async with mesh.sidecar("alice") as alice, mesh.sidecar("bob") as bob:
        await _until(lambda: {"alice", "bob"} <= set(bob.agents()), "both registered")
        old = alice.key
        await alice.rotate_key("quarterly")
        assert alice.key.public_bytes != old.public_bytes
        assert alice.key_file.read_bytes() == alice.key.seed()  # kept for the next start
        await _until(
            lambda: (
                (s := bob.plane.keys.get("alice")) is not None
                and s.public_key == alice.key.public_bytes
            ),
            "bob read the rotation",
        )
        sent = await alice.send("bob", text="signed with the new key")
        got = await bob.receive(timeout_s=10)
        assert got is not None and got.message_id == sent
        replayed = mesh.codec.seal(new_envelope("alice", "bob"), "mesh.a2a.Message", KEYS_BODY, old)
        produce(mesh.settings, [Sent(inbox_topic("bob").name, "k", replayed)])
        await _until(lambda: bob.counters.dead_lettered == 1, "the old key refused")
        assert await bob.receive(timeout_s=0.5) is None


async def test_mesh_tail_shows_records_decoded_and_says_which_verify(mesh: Mesh) -> None:
    async with mesh.sidecar("alice") as alice, mesh.sidecar("bob") as bob:
        await _until(lambda: {"alice", "bob"} <= set(alice.agents()), "both registered")
        sent = await alice.send("bob", text="look at me", task_id="t-tail")
        impostor = AgentKey.generate("alice")
        forged = mesh.codec.seal(
            new_envelope("alice", "bob"), "mesh.a2a.Message", KEYS_BODY, impostor
        )
        produce(mesh.settings, [Sent(inbox_topic("bob").name, "k", forged)])
        await _until(lambda: bob.counters.dead_lettered == 1, "the forgery dead-lettered")
        shown = await asyncio.to_thread(
            run, ["tail", "inbox.bob", "--last", "5", "--json"], mesh.settings
        )
        assert shown.returncode == 0, shown.stdout + shown.stderr
        lines = [json.loads(line) for line in shown.stdout.splitlines()]
        by_id = {line.get("message_id"): line for line in lines}
        assert by_id[sent]["verified"] is True and by_id[sent]["task_id"] == "t-tail"
        refused = [line for line in lines if line["verified"] is False]
        assert len(refused) == 1 and "signature does not match" in refused[0]["problem"]
        letters = await asyncio.to_thread(run, ["tail", "dlq"], mesh.settings)
        assert "bad_signature from" in letters.stdout and "inbox.bob" in letters.stdout
        nowhere = await asyncio.to_thread(run, ["tail", "nosuch"], mesh.settings)
        assert nowhere.returncode == 2 and "no mesh topic 'nosuch'" in nowhere.stderr


async def test_an_operator_policy_binds_a_running_agent_which_cannot_widen_it(
    mesh: Mesh, tmp_path: Path
) -> None:
    """Issue 20, policy belongs to the operator: a fleet policy set with `mesh policy set`
    reaches a running sidecar without a restart; the agent's own, wider policy does not lift
    it; refusals name the policy's version and hash; a policy record an agent signs counts for
    nothing."""
    generous = AgentPolicy(budget_usd=100.0)  # what the agent would like
    async with mesh.sidecar("spender", policy=generous) as spender:
        await spender.report_model_call("m", cost_usd=0.5)  # no operator policy yet
        strict = tmp_path / "fleet.json"
        strict.write_text(json.dumps({"budget_usd": 0.2, "budget_window_s": 3600}))
        checked = await asyncio.to_thread(run, ["policy", "check", str(strict)], mesh.settings)
        assert checked.returncode == 0 and "ok " in checked.stdout
        published = await asyncio.to_thread(
            run,
            ["policy", "set", "--fleet", "--file", str(strict), "--reason", "cost control"],
            mesh.settings,
        )
        assert published.returncode == 0, published.stdout + published.stderr
        assert "in force: * v1 hash" in published.stdout
        await _until(lambda: spender.operator_policy is not None, "the sidecar read the policy")
        assert spender.policy.budget_usd == 0.2
        with pytest.raises(PolicyViolationError, match=r"over its budget of \$0\.20"):
            await spender.report_model_call("m", cost_usd=0.1)  # 0.5 already spent this hour
        refusals = [
            t["detail"] for t in mesh.telemetry("SEND_REFUSED") if t["agent_id"] == "spender"
        ]
        assert refusals and "[policy * v1 " in refusals[-1]

        forged = {"target": "spender", "version": 7, "reason": "I decide",
                  "policy_json": canonical({"budget_usd": 1000.0})}  # fmt: skip
        envelope = new_envelope("spender", "", recipient_kind=RecipientKind.BROADCAST)
        value = mesh.codec.seal(envelope, "mesh.policy.PolicyRecord", forged, spender.key)
        produce(mesh.settings, [Sent(POLICIES, "spender", value)])
        await _until(lambda: spender.counters.untrusted_policies == 1, "the forgery ignored")
        assert spender.policy.budget_usd == 0.2

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"budget_usd": -1}))
        refused = await asyncio.to_thread(run, ["policy", "check", str(bad)], mesh.settings)
        assert refused.returncode == 1 and "FAIL" in refused.stdout
        shown = await asyncio.to_thread(run, ["policy", "show", "spender"], mesh.settings)
        assert shown.returncode == 0 and '"budget_usd": 0.2' in shown.stdout
        looser = tmp_path / "looser.json"
        looser.write_text(json.dumps({"budget_usd": 0.5, "budget_window_s": 3600}))
        diffed = await asyncio.to_thread(
            run, ["policy", "diff", "--fleet", "--file", str(looser)], mesh.settings
        )
        assert "* v1 -> " in diffed.stdout and "~ budget_usd: 0.2 -> 0.5" in diffed.stdout


async def test_a_restarted_killswitch_remembers_the_spend_window(
    settings: Settings, topics: object
) -> None:
    """Issue 14: the kill-switch's windows survive a restart (an hour of telemetry is replayed
    with the control topic), so a crash does not reset a runaway's spend."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    policy = {"agent": {"max_cost_per_minute": 1.0}}
    with running([Engine.keyed(registry_processor(settings), Cluster.of(settings), codec)]):
        async with mesh.sidecar("spender") as spender:
            first = killswitch_engine(settings, codec, policy)
            with running([first]):
                await _until(lambda: first.ready, "the first kill-switch")
                await spender.report_model_call("m", cost_usd=0.6)
                await _until(lambda: first.metrics.records_in >= 1, "the spend seen", 30)
                await asyncio.sleep(0.5)  # committed
            second = killswitch_engine(settings, codec, policy)  # a restart, mid-window
            with running([second]):
                await _until(lambda: second.ready, "the second kill-switch")
                assert spender.halt is None
                await spender.report_model_call("m", cost_usd=0.6)  # 1.2 in the minute
                await _until(lambda: spender.halt is not None, "the halt", 30)
                assert spender.halt is not None and spender.halt["rule"] == "spend_per_minute"
    registry.close()


async def test_two_killswitch_instances_fire_a_fleet_rule_once_across_a_restart(
    settings: Settings, topics: object
) -> None:
    """Issue 14: fleet rules are exact with any number of kill-switch instances (spend is
    forwarded to the instance owning '*'), and survive that instance's restart mid-window."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    policy = {"agent": {"max_cost_per_minute": 10.0}, "fleet": {"max_cost_per_minute": 1.0}}
    telemetry = Cluster.of(settings).topic(TELEMETRY)
    star = partition_for(b"*", settings.partitions)

    def owns(engine: Engine, partition: int) -> bool:
        return any(tp.topic == telemetry and tp.partition == partition for tp in engine._assigned)

    def balanced(a: Engine, b: Engine) -> bool:
        """Each instance holds telemetry partitions, and together all of them."""
        held = [[p for p in range(settings.partitions) if owns(e, p)] for e in (a, b)]
        return all(held) and sorted(held[0] + held[1]) == list(range(settings.partitions))

    with running([Engine.keyed(registry_processor(settings), Cluster.of(settings), codec)]):
        one, two = (killswitch_engine(settings, codec, policy, i) for i in ("0", "1"))
        with running([one]), running([two]):
            await _until(lambda: balanced(one, two), "both instances assigned", 60)
            owner, other = (one, two) if owns(one, star) else (two, one)
            away = next(p for p in range(settings.partitions) if owns(other, p))
            far = next(
                f"far-{i}"
                for i in range(500)
                if partition_for(f"far-{i}".encode(), settings.partitions) == away
            )
            async with mesh.sidecar(far) as spender, mesh.sidecar("near") as near:
                await _until(lambda: {far, "near"} <= set(near.agents()), "both registered")
                await spender.report_model_call("m", cost_usd=0.6)  # seen by the other instance
                await _until(lambda: owner.metrics.records_in >= 1, "the fact forwarded", 30)
                await asyncio.sleep(0.5)
                instance = owner.job.processor.requested_by.split(":")[1]  # type: ignore[attr-defined]
        # every instance stopped; the owner's comes back (a restart mid-window)
        again = killswitch_engine(settings, codec, policy, instance)
        peer = killswitch_engine(settings, codec, policy, "1" if instance == "0" else "0")
        with running([again]), running([peer]):
            await _until(lambda: balanced(again, peer), "both instances assigned", 60)
            async with mesh.sidecar("near") as near:
                await near.report_model_call("m", cost_usd=0.6)  # 1.2 in the minute
                await _until(lambda: near.halt is not None, "the fleet halt", 30)
                assert near.halt is not None and near.halt["rule"] == "fleet_spend_per_minute"
                await asyncio.sleep(1.0)
    halts = [
        mesh.codec.open(v, verify=False).body
        for _, v, _ in read_all(settings, CONTROL, settings.partitions)
    ]
    assert [h["rule"] for h in halts] == ["fleet_spend_per_minute"]  # once
    registry.close()
