"""The kill-switch on the real broker: a scripted runaway, operator halts, and the audit trail."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from mesh.adapters.keyfiles import mesh_key
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import CONTROL_SUBJECT
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey
from mesh.domain.topics import AUDIT, CONTROL, REGISTRY_EVENTS, TELEMETRY
from mesh.settings import Cluster, Settings
from processors.audit import AuditProcessor
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine
from tests.integration.fleet import (
    Sent,
    codec_for,
    committed,
    killswitch_engine,
    produce,
    read_all,
    running,
    wait_for,
)
from tests.integration.test_cli import run

_ids = itertools.count()
POLICY = {
    "agent": {"max_cost_per_minute": 1.0, "max_cycle_repeats": 3},
    "radius": {"causation_cycle": "dependants"},
}


def card(skill: str) -> str:
    return json.dumps({"name": skill, "skills": [{"id": skill, "name": skill}]})


def registration(codec: MessageCodec, key: AgentKey, depends_on: list[str]) -> Sent:
    body = {
        "agent_id": key.agent_id,
        "owner": "ops",
        "version": "1",
        "public_key": key.public_bytes,
        "agent_card_json": card(key.agent_id),
        "depends_on_agents": depends_on,
    }
    return Sent(
        REGISTRY_EVENTS, key.agent_id, seal(codec, key, "mesh.registry.AgentRegistered", body)
    )


def seal(
    codec: MessageCodec, key: AgentKey, subject: str, body: dict[str, Any], **kw: Any
) -> bytes:
    envelope = Envelope(
        f"m-{next(_ids)}", "c", kw.get("correlation", "req"), key.agent_id,
        RecipientKind.BROADCAST, "", int(time.time() * 1000), kw.get("hop", 0),
    )  # fmt: skip
    return codec.seal(envelope, subject, body, key)


def telemetry(codec: MessageCodec, key: AgentKey, kind: str, **fields: Any) -> Sent:
    body = {"agent_id": key.agent_id, "kind": kind, "name": fields.pop("name", "call")} | fields
    return Sent(TELEMETRY, key.agent_id, seal(codec, key, "mesh.telemetry.TelemetryEvent", body))


def halts(settings: Settings, codec: MessageCodec) -> list[dict[str, Any]]:
    found = []
    for _, value, _ in read_all(settings, CONTROL, settings.partitions):
        opened = codec.open(value, verify=False)
        assert opened.body_subject == CONTROL_SUBJECT
        found.append(opened.body)
    return found


def test_a_scripted_runaway_gets_exactly_one_halt_with_the_right_radius(
    settings: Settings, topics: object
) -> None:
    codec, registry = codec_for(settings)
    keys = {n: AgentKey.generate(n) for n in ("intake", "research", "drafting", "review")}
    produce(
        settings,
        [
            registration(codec, keys["intake"], ["research"]),
            registration(codec, keys["research"], []),
            registration(codec, keys["drafting"], []),
            registration(codec, keys["review"], ["drafting"]),
        ],
    )
    bootstrap = settings.bootstrap_servers or ""
    serde = codec.serde
    killswitch = killswitch_engine(settings, codec, POLICY)
    engines = [
        Engine.keyed(RegistryProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec),
        killswitch,
        Engine.keyed(AuditProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec),
    ]
    with running(engines):
        wait_for(lambda: engines[0].metrics.records_out >= 4, 60, "the registrations")
        normal = [telemetry(codec, keys["intake"], "MODEL_CALL", cost_usd=0.01) for _ in range(20)]
        burst = [telemetry(codec, keys["research"], "MODEL_CALL", cost_usd=0.2) for _ in range(30)]
        loop = [
            telemetry(codec, keys["drafting"], "MESSAGE_SENT", name="send", peer="review")
            for _ in range(10)
        ]
        produce(settings, normal + burst + loop)
        wait_for(lambda: engines[1].metrics.records_in >= 60, 60, "the kill-switch")
        wait_for(lambda: len(halts(settings, codec)) >= 2, 30, "two halts")
        # Halts commit with the offsets of the telemetry that caused them: once every
        # telemetry record is committed, every halt it will ever cause is on the topic.
        sent = len(normal + burst + loop)
        group = killswitch.group
        wait_for(
            lambda: committed(settings, group, TELEMETRY, settings.partitions) == sent,
            30,
            "the kill-switch to commit all telemetry",
        )
        found = halts(settings, codec)
        assert len(found) == 2, found
        by_rule = {h["rule"]: h for h in found}
        spend, cycle = by_rule["spend_per_minute"], by_rule["causation_cycle"]
        assert (spend["scope"], spend["target"], spend["affected_agents"]) == (
            "AGENT", "research", ["research"],
        )  # fmt: skip
        assert (cycle["scope"], cycle["target"], cycle["affected_agents"]) == (
            "DEPENDANTS", "drafting", ["drafting", "review"],
        )  # fmt: skip
        assert len(spend["evidence"]) == 6 and spend["requested_by"] == "killswitch:0"

        typo = run(["halt", "intak", "--reason", "manual check"], settings)
        assert typo.returncode == 1, typo.stdout + typo.stderr
        assert "no registered agent is called 'intak'; did you mean intake?" in " ".join(
            typo.stderr.split()
        )
        not_halted = run(["resume", "intake", "--reason", "test"], settings)
        assert not_halted.returncode == 1 and "'intake' is not halted" in not_halted.stderr
        # review is halted with drafting, its dependency
        covered = run(["resume", "review", "--reason", "test"], settings)
        assert covered.returncode == 1
        assert "halted by the dependants halt under 'drafting'" in " ".join(covered.stderr.split())
        halted = run(["halt", "intake", "--reason", "manual check"], settings)
        assert halted.returncode == 0, halted.stderr
        listed = run(["halts"], settings)
        assert "intake: agent halt by operator" in listed.stdout
        assert "research: agent halt by spend_per_minute" in listed.stdout
        as_json = [json.loads(x) for x in run(["halts", "--json"], settings).stdout.splitlines()]
        assert {(h["key"], h["rule"]) for h in as_json} >= {
            ("intake", "operator"),
            ("research", "spend_per_minute"),
        }
        resumed = run(["resume", "research", "--reason", "test"], settings)
        assert resumed.returncode == 0, resumed.stderr
        listed = run(["halts"], settings)
        assert "research:" not in listed.stdout and "intake:" in listed.stdout

        def audited_control() -> int:
            records = read_all(settings, AUDIT, settings.partitions)
            return sum(
                1
                for _, value, _ in records
                if serde.decode(value).record["source_topic"].endswith(CONTROL)
            )

        wait_for(lambda: audited_control() >= 4, 30, "every halt and resume in the audit log")
        assert audited_control() == 4
        out = settings.state_dir / "audit.jsonl"
        exported = run(["audit", "export", "--out", str(out)], settings)
        assert exported.returncode == 0, exported.stderr
        lines = out.read_text().splitlines()
        assert len(lines) >= 4 and f"wrote {len(lines)} records" in exported.stdout
    bad = run(["halt", "--fleet", "intake", "--reason", "x"], settings)
    assert bad.returncode == 2 and "exactly one of" in bad.stderr
    registry.close()
