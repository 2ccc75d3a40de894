"""Issue 20 on the broker: policy belongs to the operator, tools are authorized before they
run, budgets per chain, and the audit shows which policy decided."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest

from mesh.adapters.keyfiles import control_signers, mesh_key
from mesh.adapters.policies import publish_policy
from mesh.adapters.serde.wire import frame
from mesh.domain.approvals import APPROVAL_SUBJECT
from mesh.domain.control import chain_halt, halt_in_force
from mesh.domain.envelope import new_envelope
from mesh.domain.identity import AgentKey
from mesh.domain.policies import FLEET
from mesh.domain.topics import APPROVALS, TELEMETRY, inbox_topic
from mesh.errors import PolicyViolationError
from mesh.settings import Cluster, Settings
from processors.audit import AuditProcessor
from processors.runtime.engine import Engine
from sidecar.core import MESSAGE_SUBJECT
from sidecar.delivery import message_body
from sidecar.policy import AgentPolicy
from tests.integration.fleet import Sent, codec_for, killswitch_engine, produce, running
from tests.integration.test_cli import run
from tests.integration.test_sidecar import Mesh, _until, registry_processor

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SEARCH = {
    "type": "object",
    "properties": {"q": {"type": "string", "maxLength": 20}},
    "required": ["q"],
    "additionalProperties": False,
}


def refusals(mesh: Mesh, agent: str) -> list[dict[str, Any]]:
    return [t for t in mesh.telemetry("SEND_REFUSED") if t["agent_id"] == agent]


async def test_in_production_an_agent_cannot_set_or_widen_its_policy_and_tools_need_permits(
    settings: Settings, topics: object, tmp_path: Path
) -> None:
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    audit = Engine.keyed(AuditProcessor(mesh_key(settings)), cluster, codec)
    generous = AgentPolicy(budget_usd=100.0, allowed_tools=None)  # what the agent would like
    with running([Engine.keyed(registry_processor(settings), cluster, codec), audit]):
        async with (
            mesh.sidecar("spender", profile="production", policy=generous) as spender,
            mesh.sidecar("peer", profile="production") as peer,
        ):
            await _until(lambda: "peer" in spender.agents(), "peer registered")
            for refused in (spender.send("peer", text="hi"), spender.permit_tool("search")):
                with pytest.raises(PolicyViolationError, match="production profile denies") as no:
                    await refused
                assert no.value.rule == "no_policy"
            assert spender.policy_source() == "none (production denies)"

            fleet = tmp_path / "fleet.json"
            fleet.write_text(
                json.dumps({"budget_usd": 0.3, "allowed_tools": ["search"],
                            "tools": {"search": {"arguments": SEARCH, "max_cost_usd": 0.2}}})
            )  # fmt: skip
            published = await asyncio.to_thread(
                run, ["policy", "set", "--fleet", "--file", str(fleet), "--reason", "t"], settings
            )
            assert published.returncode == 0, published.stdout + published.stderr
            await _until(lambda: spender.operator_policy is not None, "the policy read")
            in_force = spender.operator_policy
            assert in_force is not None and spender.policy_source() == "operator"
            assert spender.policy.budget_usd == 0.3  # the agent's own 100 does not widen it
            await spender.send("peer", text="now allowed")
            assert (await peer.receive(timeout_s=10)) is not None

            ran: list[str] = []
            with pytest.raises(PolicyViolationError, match="outside its constraints") as bad:
                async with spender.tool("search", {"q": "x" * 30}):
                    ran.append("search")  # never: refused before the tool runs
            assert bad.value.rule == "arguments_not_allowed" and ran == []
            with pytest.raises(PolicyViolationError, match="forbids tool 'shell'"):
                async with spender.tool("shell", {"cmd": "rm -rf /"}):
                    ran.append("shell")
            async with spender.tool("search", {"q": "kafka"}, cost_usd=0.2) as call:
                ran.append("search")
                call.cost_usd = 0.15
            assert ran == ["search"]
            with pytest.raises(PolicyViolationError, match="over its budget") as over:
                await spender.permit_tool("search", {"q": "more"}, cost_usd=0.2)  # 0.15 + 0.2
            assert over.value.rule == "budget_exceeded"
            with pytest.raises(PolicyViolationError, match="without a permit") as unpermitted:
                await spender.report_tool_call("search", {"q": "done anyway"}, cost_usd=0.01)
            assert unpermitted.value.rule == "no_permit"

        rules = [r["rule"] for r in refusals(mesh, "spender")]
        assert rules == ["no_policy", "no_policy", "arguments_not_allowed", "tool_not_allowed",
                         "budget_exceeded", "no_permit"]  # fmt: skip
        decided = [r for r in refusals(mesh, "spender") if r["rule"] != "no_policy"]
        assert {r["policy_hash"] for r in decided} == {in_force.hash}
        [permit] = [t for t in mesh.telemetry("TOOL_PERMIT") if t["agent_id"] == "spender"]
        [call_done] = [t for t in mesh.telemetry("TOOL_CALL") if t["agent_id"] == "spender"]
        assert permit["permit_id"] == call_done["permit_id"] and call_done["cost_usd"] == 0.15
        assert permit["policy_hash"] == call_done["policy_hash"] == in_force.hash

        telemetry = f"{settings.topic_prefix}{TELEMETRY}"

        def audited() -> list[dict[str, Any]]:
            out = run(["audit", "replay", "--agent", "spender"], settings)
            views = [json.loads(line) for line in out.stdout.splitlines()]
            return [v for v in views if v["source"].startswith(telemetry)]

        await _until(lambda: len(audited()) >= 8, "the audit caught up", 60)
        in_audit = [v["body"] for v in audited() if v["body"]["kind"] == "SEND_REFUSED"]
        assert [b["rule"] for b in in_audit] == rules  # the audit shows which rule decided
        assert {b["policy_hash"] for b in in_audit if b["rule"] != "no_policy"} == {in_force.hash}
    registry.close()


CHAIN_KILLSWITCH = {
    "agent": {"max_cost_per_minute": 100.0, "max_cost_per_hour": 100.0},
    "chain": {"max_cost_usd": 0.5},
}


async def test_a_chain_over_its_budget_is_halted_while_other_chains_of_its_agents_go_on(
    settings: Settings, topics: object
) -> None:
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    publish_policy(cluster, codec, control_signers(settings), FLEET, {}, "every agent")
    killswitch = killswitch_engine(settings, codec, CHAIN_KILLSWITCH)
    with running([Engine.keyed(registry_processor(settings), cluster, codec), killswitch]):
        async with (
            mesh.sidecar("intake", profile="production") as intake,
            mesh.sidecar("worker", profile="production") as worker,
        ):
            await _until(lambda: "worker" in intake.agents(), "worker registered")
            await _until(lambda: killswitch.ready, "the kill-switch")
            runaway = await intake.send("worker", text="loop")  # chain 1
            steady = await intake.send("worker", text="once")  # chain 2
            first = await worker.receive(timeout_s=10, auto_ack=False)
            second = await worker.receive(timeout_s=10, auto_ack=False)
            assert first is not None and second is not None
            assert {first.message_id, second.message_id} == {runaway, steady}
            loop = first if first.message_id == runaway else second
            other = second if loop is first else first

            stopped: PolicyViolationError | None = None
            with worker.serving(loop):
                for n in range(40):  # $0.1 a call: the chain's $0.5 is crossed at the sixth
                    try:
                        async with worker.tool("search", {"q": n}, cost_usd=0.1):
                            pass
                    except PolicyViolationError as exc:
                        stopped = exc
                        break
                    await _wait_a_moment()
            assert stopped is not None and stopped.rule == "chain_halted", stopped
            halt = chain_halt(worker.halts(), loop.envelope.correlation_id)
            assert halt is not None and halt["rule"] == "chain_spend"
            assert halt["scope"] == "CHAIN" and halt["affected_agents"] == ["intake", "worker"]

            assert worker.halt is None and halt_in_force(worker.halts(), "worker") is None
            with worker.serving(other):  # the same agent, another chain: carries on
                async with worker.tool("search", {"q": "fine"}, cost_usd=0.1):
                    pass
                await worker.send("intake", text="done", reply_to=other)
            with pytest.raises(PolicyViolationError, match="is halted by chain_spend"):
                await worker.send("intake", text="more", reply_to=loop)

            reply = await intake.receive(timeout_s=10)
            assert reply is not None and reply.envelope.correlation_id == steady
            await intake.send("worker", text="again", reply_to=reply)  # chain 2 goes on
            late = loop.envelope.reply("intake", "worker")  # chain 1, still in flight
            sealed = codec.seal(late, MESSAGE_SUBJECT, message_body("late"), intake.key)
            produce(settings, [Sent(inbox_topic("worker").name, "late", sealed)])
            again = await worker.receive(timeout_s=10)
            assert again is not None and again.text() == "again"
            assert await worker.receive(timeout_s=2) is None  # chain 1's late message: dropped
            dropped = [r for r in refusals(mesh, "worker") if r["name"] == "deliver"]
            assert dropped and dropped[-1]["rule"] == "chain_halted"
    registry.close()


async def _wait_a_moment() -> None:
    await asyncio.sleep(0.15)


async def test_a_message_with_an_unknown_nested_field_is_dead_lettered(
    settings: Settings, topics: object
) -> None:
    """Strict at every edge: a signed message whose body was written with a schema outside the
    catalogue, carrying a nested field no reader names, is dead-lettered with the reason; the
    messages around it are delivered."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    schema = json.loads((SCHEMAS / "mesh.a2a.Message" / "v1.avsc").read_text())
    schema["fields"][1]["type"]["items"]["fields"].append(
        {"name": "exfil", "type": "string", "default": ""}
    )
    foreign = codec.serde.registry.register(MESSAGE_SUBJECT, json.dumps(schema)).schema_id
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        fastavro.parse_schema(schema),
        {"role": "AGENT", "metadata": {}, "parts": [{"kind": "TEXT", "exfil": "secret"}]},
    )
    with running([Engine.keyed(registry_processor(settings), Cluster.of(settings), codec)]):
        async with mesh.sidecar("alice") as alice, mesh.sidecar("bob") as bob:
            await _until(lambda: bob.plane.keys.get("alice") is not None, "alice's key")
            before = await alice.send("bob", text="before")
            smuggled = codec.seal_framed(
                new_envelope("alice", "bob"), frame(foreign, body.getvalue()), alice.key
            )
            produce(settings, [Sent(inbox_topic("bob").name, "k", smuggled)])
            after = await alice.send("bob", text="after")
            got = [await bob.receive(timeout_s=10) for _ in range(2)]
            assert [g.message_id for g in got if g] == [before, after]
            await _until(lambda: bob.counters.dead_lettered == 1, "the smuggler dead-lettered")
    letters = mesh.dead_letters()
    assert len(letters) == 1, [(d["detected_by"], d["reason"]) for d in letters]
    [letter] = letters
    assert letter["reason_code"] == "unknown_field"
    assert "parts[].exfil" in letter["reason"] and letter["original"] == smuggled
    registry.close()


async def test_the_receiving_side_refuses_replays_and_messages_the_senders_policy_forbids(
    settings: Settings, topics: object
) -> None:
    """A hostile sender goes around its own sidecar: it produces signed messages straight to
    an inbox. The receiving sidecar still enforces the sender's operator policy, and refuses a
    captured message produced again (the broker's append time gives it away)."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    signers = control_signers(settings)
    publish_policy(cluster, codec, signers, FLEET, {}, "everyone")
    publish_policy(cluster, codec, signers, "mallory", {"allowed_recipients": ["bob"]}, "bob only")
    with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
        async with (
            mesh.sidecar("mallory", profile="production") as mallory,
            mesh.sidecar("carol", profile="production") as carol,
        ):
            await _until(lambda: carol.plane.keys.get("mallory") is not None, "mallory's key")
            await _until(lambda: carol.plane.sender_policy("mallory")[0] is not None, "policy")
            with pytest.raises(PolicyViolationError, match="forbids sending"):
                await mallory.send("carol", text="hi")  # its own sidecar refuses
            around = codec.seal(
                new_envelope("mallory", "carol"), MESSAGE_SUBJECT, message_body("hi"), mallory.key
            )
            captured = new_envelope("mallory", "carol")._replace(
                created_at_ms=int(time.time() * 1000) - 600_000  # made 10 minutes ago
            )
            replayed = codec.seal(captured, MESSAGE_SUBJECT, message_body("old"), mallory.key)
            inbox = inbox_topic("carol").name
            produce(settings, [Sent(inbox, "a", around), Sent(inbox, "b", replayed)])
            await _until(lambda: carol.counters.dead_lettered == 2, "both refused on receipt")
            assert await carol.receive(timeout_s=1) is None
    reasons = {d["reason_code"]: d for d in mesh.dead_letters()}
    assert set(reasons) == {"policy_violation", "replayed"}
    assert "under its operator policy (mallory v1 " in reasons["policy_violation"]["reason"]
    assert reasons["policy_violation"]["original"] == around
    assert re.search(r"\+6\d\d\.\ds apart \(bound 300s\)", reasons["replayed"]["reason"])
    registry.close()


async def test_what_an_agent_may_say_is_checked_on_sending_and_again_on_receipt(
    settings: Settings, topics: object
) -> None:
    """AISVS C9.5.4: the operator's policy constrains the content an agent passes downstream
    (``message_parts``, ``message_data``): its own sidecar refuses a message outside them, and
    a message produced around that sidecar is dead-lettered by the receiver."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    signers = control_signers(settings)
    publish_policy(cluster, codec, signers, FLEET, {}, "everyone")
    quotes = {
        "message_parts": ["DATA"],
        "message_data": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "price_usd": {"maximum": 1000}},
            "required": ["sku", "price_usd"],
            "additionalProperties": False,
        },
    }
    publish_policy(cluster, codec, signers, "quoter", quotes, "quotes only, no free text")
    with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
        async with (
            mesh.sidecar("quoter", profile="production") as quoter,
            mesh.sidecar("buyer", profile="production") as buyer,
        ):
            await _until(lambda: buyer.plane.keys.get("quoter") is not None, "quoter's key")
            await _until(lambda: buyer.plane.sender_policy("quoter")[0] is not None, "policy")
            await _until(lambda: quoter.operator_policy is not None, "its own policy")
            sent = await quoter.send("buyer", data={"sku": "A-1", "price_usd": 120})
            got = await buyer.receive(timeout_s=15)
            assert got is not None and got.message_id == sent  # within the constraints
            with pytest.raises(PolicyViolationError, match="TEXT, which its policy"):
                await quoter.send("buyer", text="the customer's card is 4111 ...")
            with pytest.raises(PolicyViolationError, match="price_usd: 250000 is greater"):
                await quoter.send("buyer", data={"sku": "A-1", "price_usd": 250000})
            around = codec.seal(
                new_envelope("quoter", "buyer"), MESSAGE_SUBJECT,
                message_body(data={"sku": "A-1", "price_usd": 1, "card": "4111"}), quoter.key,
            )  # fmt: skip
            produce(settings, [Sent(inbox_topic("buyer").name, "q", around)])
            await _until(lambda: buyer.counters.dead_lettered == 1, "refused on receipt")
            assert await buyer.receive(timeout_s=1) is None
    refused = [t for t in mesh.telemetry("SEND_REFUSED") if t["rule"] == "message_not_allowed"]
    assert len(refused) == 2  # the sender's own refusals, on the record
    [dead] = mesh.dead_letters()
    assert "'quoter''s operator policy (quoter v1 " in dead["reason"]
    assert "Additional properties are not allowed ('card' was unexpected)" in dead["reason"]
    assert dead["original"] == around
    registry.close()


WIRE = {
    "allowed_tools": ["wire", "search"],
    "tools": {"wire": {"requires_approval": True, "max_cost_usd": 1.0}},
}


async def test_a_high_impact_tool_runs_only_with_an_operators_single_use_approval(
    settings: Settings, topics: object
) -> None:
    """AISVS C9.2: the call waits for a person; the approval binds to the exact call, is used
    once, and nothing the agent signs can stand in for it."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    publish_policy(cluster, codec, control_signers(settings), FLEET, WIRE, "wires need a person")
    payment = {"amount_usd": 12500, "to": "ACME GmbH", "iban": "DE89370400440532013000"}
    with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
        async with mesh.sidecar("payer", profile="production") as payer:
            await _until(lambda: payer.operator_policy is not None, "the policy read")
            await _until(lambda: payer.plane.keys.get("payer") is not None, "its key vouched")
            with pytest.raises(PolicyViolationError, match="needs an operator's approval") as ask:
                await payer.permit_tool("wire", payment, cost_usd=0.5)
            assert ask.value.rule == "approval_required"
            request_id = str(ask.value).split("request ")[1].split(" ")[0]

            shown = await asyncio.to_thread(run, ["approvals", "show", request_id], settings)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            view = json.loads(shown.stdout)
            assert view["arguments"] == payment and view["state"] == "pending"  # complete
            listed = await asyncio.to_thread(run, ["approvals", "ls"], settings)
            assert request_id in listed.stdout and "payer -> wire" in listed.stdout

            forged = {**view, "kind": "APPROVED"}  # the agent approving itself
            self_approved = codec.seal(
                new_envelope("payer", ""), APPROVAL_SUBJECT, _step(forged), payer.key
            )
            produce(settings, [Sent(APPROVALS, request_id, self_approved)])
            with pytest.raises(PolicyViolationError, match="approval"):
                await payer.permit_tool("wire", payment, cost_usd=0.5, wait_approval_s=1.0)

            approve = ["approvals", "approve", request_id, "--note", "invoice 4711"]
            approved = await asyncio.to_thread(run, approve, settings)
            assert approved.returncode == 0, approved.stdout + approved.stderr
            assert "approved " + request_id in approved.stdout
            ran: list[str] = []
            async with payer.tool("wire", payment, cost_usd=0.5, wait_approval_s=15) as call:
                ran.append("wire")
                call.cost_usd = 0.5
            assert ran == ["wire"]
            with pytest.raises(PolicyViolationError) as again:  # used: a new request
                await payer.permit_tool("wire", payment, cost_usd=0.5)
            assert again.value.rule == "approval_required" and request_id not in str(again.value)
            other = {**payment, "amount_usd": 99999}
            with pytest.raises(PolicyViolationError, match="needs an operator's approval"):
                await payer.permit_tool("wire", other, cost_usd=0.5)  # not the call approved
    [permit] = [t for t in mesh.telemetry("TOOL_PERMIT") if t["name"] == "wire"]
    assert "approved by operator:" in permit["detail"] and request_id in permit["detail"]
    later = run(["approvals", "ls", "--all", "--json"], settings)
    assert later.returncode == 0, later.stdout + later.stderr
    states = {
        json.loads(line)["request_id"]: json.loads(line) for line in later.stdout.splitlines()
    }
    assert states[request_id]["state"] == "used" and states[request_id]["note"] == "invoice 4711"
    registry.close()


async def test_only_an_approver_the_policy_names_may_approve_a_tool(
    settings: Settings, topics: object
) -> None:
    """Issue 21: who may approve what is the operator's policy (``approvers`` per tool); an
    approval by another operator is refused at the permit, on the record, and the call is
    asked again for the approver named."""
    cfo = AgentKey.generate("operator:cfo")
    settings = settings.with_overrides(control_signers=(("operator:cfo", cfo.public_bytes),))
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    wire = {"requires_approval": True, "approvers": ["operator:cfo"]}
    policy = {"allowed_tools": ["wire"], "tools": {"wire": wire}}
    publish_policy(cluster, codec, control_signers(settings), FLEET, policy, "the CFO signs")
    payment = {"amount_usd": 250000, "to": "ACME GmbH"}
    with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
        async with mesh.sidecar("payer", profile="production") as payer:
            await _until(lambda: payer.operator_policy is not None, "the policy read")
            await _until(lambda: payer.plane.keys.get("payer") is not None, "its key vouched")
            with pytest.raises(PolicyViolationError) as ask:
                await payer.permit_tool("wire", payment)
            request_id = str(ask.value).split("request ")[1].split(" ")[0]
            root = await asyncio.to_thread(
                run, ["approvals", "approve", request_id, "--note", "looks fine"], settings
            )
            assert root.returncode == 0, root.stdout + root.stderr  # operator:root signs
            with pytest.raises(PolicyViolationError) as wrong:
                await payer.permit_tool("wire", payment, wait_approval_s=10)
            assert wrong.value.rule == "approver_not_allowed", wrong.value
            assert "approved by 'operator:root', who may not decide it" in str(wrong.value)
            with pytest.raises(PolicyViolationError) as again:  # a new request, for the CFO
                await payer.permit_tool("wire", payment)
            assert again.value.rule == "approval_required" and request_id not in str(again.value)
            second = str(again.value).split("request ")[1].split(" ")[0]
            shown = await asyncio.to_thread(run, ["approvals", "show", second], settings)
            view = json.loads(shown.stdout)
            approved = _step({**view, "kind": "APPROVED"})
            decision = {**approved, "actor": "operator:cfo", "note": "CFO approves"}
            signed = codec.seal(new_envelope("operator:cfo", ""), APPROVAL_SUBJECT, decision, cfo)
            produce(settings, [Sent(APPROVALS, second, signed)])
            permit = await payer.permit_tool("wire", payment, wait_approval_s=15)
            assert permit.tool == "wire"
    refusals = [
        t for t in mesh.telemetry("SEND_REFUSED") if t.get("rule") == "approver_not_allowed"
    ]
    assert len(refusals) == 1  # on the record
    registry.close()


def _step(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": view["kind"], "request_id": view["request_id"], "agent_id": view["agent_id"],
        "tool": view["tool"], "arguments_json": None, "arguments_digest": view["arguments_sha256"],
        "cost_usd": 0.0, "correlation_id": view["chain"], "expires_at": 4_102_444_800_000,
        "actor": view["agent_id"], "note": "self-approved", "policy_hash": None,
    }  # fmt: skip


async def test_mesh_send_pokes_an_agent_by_hand_and_prints_its_reply(
    settings: Settings, topics: object
) -> None:
    """Issue 17: `mesh send` sends as an agent of its own (bound by the operator's policy like
    any other) and waits for the reply."""
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    publish_policy(cluster, codec, control_signers(settings), FLEET, {}, "everyone")
    with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
        async with mesh.sidecar("echo", profile="production", capabilities=("echo",)) as echo:

            async def answer() -> None:
                got = await echo.receive(timeout_s=60)
                assert got is not None
                await echo.send(got.sender, text=got.text().upper(), reply_to=got)

            answering = asyncio.create_task(answer())
            sent = await asyncio.to_thread(
                run, ["send", "--capability", "echo", "--text", "ping", "--wait-reply", "30"],
                settings,
            )  # fmt: skip
            await answering
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "sent " in sent.stdout and "from cli" in sent.stdout
            assert "reply from echo: PING" in sent.stdout
            keys = await asyncio.to_thread(run, ["keys", "list", "--json"], settings)
            listed = {json.loads(line)["agent_id"]: json.loads(line) for line in
                      keys.stdout.splitlines()}  # fmt: skip
            assert listed["echo"]["status"] == "ACTIVE" and listed["echo"]["serial"] >= 1
            shown = await asyncio.to_thread(run, ["agents", "show", "echo"], settings)
            record = json.loads(shown.stdout)
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["updated_at"])
    bad = run(["send", "echo"], settings)
    assert bad.returncode == 2 and "give --text, --data, or both" in bad.stderr
    registry.close()
