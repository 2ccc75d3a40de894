"""Issue 21, production gates: an uncertified agent cannot message a production agent (its
sidecar refuses, and the receiver dead-letters what went around it); `mesh gates check`
fails the gate whose evidence is missing; a drill passes and the agent is certified; a new
version starts uncertified again."""

from __future__ import annotations

import asyncio
import json

import pytest

from mesh.adapters.keyfiles import control_signers, mesh_key
from mesh.adapters.policies import publish_policy
from mesh.domain.envelope import new_envelope
from mesh.domain.policies import FLEET
from mesh.domain.topics import inbox_topic
from mesh.errors import PolicyViolationError
from mesh.settings import Cluster, Settings
from processors.audit import AuditProcessor
from processors.runtime.engine import Engine
from sidecar.core import MESSAGE_SUBJECT, Sidecar
from sidecar.delivery import message_body
from stack.drill import Drill, canary_sidecar
from tests.integration.fleet import Sent, codec_for, killswitch_engine, produce, running
from tests.integration.test_cli import run
from tests.integration.test_sidecar import Mesh, _until, registry_processor

FLEET_POLICY = {
    "allowed_recipients": ["desk", "ledger", "research"],
    "allowed_tools": ["search"],
    "budget_usd": 5.0,
}


def certified(agent: Sidecar, who: str) -> bool:
    record = agent.agents().get(who)
    return record is not None and "production" in record.certifications


async def test_an_uncertified_agent_is_kept_from_production_until_its_gates_pass(
    settings: Settings, topics: object
) -> None:
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    publish_policy(cluster, codec, control_signers(settings), FLEET, FLEET_POLICY, "gated fleet")
    engines = [
        Engine.keyed(registry_processor(settings), cluster, codec),
        Engine.keyed(AuditProcessor(mesh_key(settings)), cluster, codec),
        killswitch_engine(settings, codec, {}),
    ]
    note = "redeploy the previous tag"
    with running(engines):
        async with (
            mesh.sidecar("ledger", "production", capabilities=("books",), environment="production")
            as ledger,
            mesh.sidecar("desk", "production", capabilities=("escalation",)),
            canary_sidecar(cluster, codec.serde) as canary,
        ):  # fmt: skip
            research = mesh.sidecar(
                "research", "production", capabilities=("research",), rollback_note=note
            )
            await research.start()
            await _until(lambda: {"ledger", "desk", "mesh-canary"} <= set(research.agents()), "all")
            await _until(lambda: canary.plane.killswitch_age_s() is not None, "kill-switch")
            assert (await Drill(cluster, canary, 60, 5).run_once()).ok  # the fleet's drill

            with pytest.raises(PolicyViolationError, match="version 1 was never certified"):
                await research.send("ledger", text="book this")
            assert await research.send("desk", text="staging is fine") is not None
            around = codec.seal(  # produced around its sidecar, signed with its own key
                new_envelope("research", "ledger"), MESSAGE_SUBJECT, message_body("hi"),
                research.key,
            )  # fmt: skip
            produce(settings, [Sent(inbox_topic("ledger").name, "t", around)])
            await _until(lambda: ledger.counters.dead_lettered == 1, "refused on receipt")

            checked = await asyncio.to_thread(run, ["gates", "check", "research"], settings)
            assert checked.returncode == 1, checked.stdout + checked.stderr
            assert "FAIL killswitch_tested: no drill of version 1" in checked.stdout
            assert "PASS rollback_plan: rollback note registered by the owner" in checked.stdout
            assert "PASS escalation_path: 'escalation' offered by desk" in checked.stdout
            assert checked.stdout.count("FAIL") == 1

            certify = ["gates", "certify", "research", "--by", "cfo"]
            refused = await asyncio.to_thread(run, certify, settings)
            assert refused.returncode == 1
            assert "gates failing: killswitch_tested" in refused.stdout
            await _until(lambda: research.agents()["research"].gates_failing != (), "verdict")
            with pytest.raises(PolicyViolationError, match="gates failing: killswitch_tested"):
                await research.send("ledger", text="book this")

            drilled = await asyncio.to_thread(run, ["gates", "drill", "research"], settings)
            assert drilled.returncode == 0, drilled.stdout + drilled.stderr
            assert "drill of research v1: passed, halt acknowledged in" in drilled.stdout
            assert research.halt is None  # resumed

            granted = await asyncio.to_thread(run, certify, settings)
            assert granted.returncode == 0, granted.stdout + granted.stderr
            assert "certified research v1 for production by cfo until" in granted.stdout
            await _until(lambda: certified(research, "research"), "its sidecar saw it")
            await _until(lambda: certified(ledger, "research"), "the receiver saw it")
            sent = await research.send("ledger", text="book this")
            got = await ledger.receive(timeout_s=10)
            assert got is not None and got.message_id == sent
            listed = await asyncio.to_thread(run, ["agents", "ls", "--json"], settings)
            rows = {r["agent_id"]: r for r in map(json.loads, listed.stdout.splitlines())}
            assert rows["research"]["certified"].startswith("production until")
            assert rows["ledger"]["environment"] == "production"
            assert rows["desk"]["certified"] == "no"
            await research.stop()

            v2 = mesh.sidecar("research", "production", version="2", rollback_note=note)
            async with v2:
                await _until(lambda: v2.agents()["research"].version == "2", "v2 registered")
                assert v2.agents()["research"].certified_versions == ("1",)
                with pytest.raises(PolicyViolationError, match="version 2 was never certified"):
                    await v2.send("ledger", text="book this")
    reasons = [d["reason"] for d in mesh.dead_letters()]
    assert any("not certified for production" in r and "on receipt" in r for r in reasons)
    registry.close()
