"""Issue 21, the kill-switch proves it can still halt: the scheduled drill halts and resumes a
canary with the operator's key and times the canary's acknowledgement; it fails, on the
record, when the kill-switch processor is not running or the canary's control follower is
dead, and never leaves the canary halted."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Scope, control_key
from mesh.domain.drills import DRILL_SUBJECT
from mesh.domain.envelope import new_envelope
from mesh.domain.topics import DRILLS, TELEMETRY
from mesh.settings import Cluster, Settings
from processors.runtime.engine import Engine
from stack.drill import Drill, canary_sidecar
from tests.integration.fleet import (
    Sent,
    codec_for,
    killswitch_engine,
    produce,
    read_all,
    running,
)
from tests.integration.test_cli import run
from tests.integration.test_sidecar import _until, registry_processor


def telemetry(settings: Settings, codec: MessageCodec) -> list[dict[str, object]]:
    records = read_all(settings, TELEMETRY, settings.partitions)
    return [dict(codec.open(value, verify=False).body) for _, value, _ in records]


async def test_the_drill_halts_and_resumes_the_canary_and_fails_on_the_record(
    settings: Settings, topics: object
) -> None:
    codec, registry = codec_for(settings)
    cluster = Cluster.of(settings)
    with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
        async with canary_sidecar(cluster, codec.serde) as canary:
            drill = Drill(cluster, canary, every_s=60, deadline_s=5)
            await _until(lambda: canary.agent_id in canary.agents(), "the canary registered")
            first = await drill.run_once()  # no kill-switch processor running
            assert not first.ok and first.failures_in_row == 1
            assert "kill-switch processor has never heartbeat" in (first.failure or "")

            with running([killswitch_engine(settings, codec, {})]):
                await _until(lambda: canary.plane.killswitch_age_s() is not None, "heartbeat")
                passed = await drill.run_once()
                assert passed.ok, passed.failure
                assert passed.failures_in_row == 0 and passed.last_success_ms == passed.at_ms
                assert passed.halt_ms is not None and passed.resume_ms is not None
                assert len(passed.command_ids) == 2  # the halt and the resume, in the audit
                acks = [b for b in telemetry(settings, codec) if b["kind"] == "HALT_ACK"]
                assert any(passed.command_ids[0] in (b.get("detail") or "") for b in acks)
                shown = await asyncio.to_thread(run, ["drill", "show", "--json"], settings)
                assert shown.returncode == 0, shown.stdout + shown.stderr
                [row] = [json.loads(line) for line in shown.stdout.splitlines()]
                assert row["healthy"] and row["summary"].startswith("passed")

                canary.plane.applying_changes = False  # its control follower no longer acts
                broken = await drill.run_once()
                assert not broken.ok and broken.failures_in_row == 1
                assert "did not apply and acknowledge the drill halt" in (broken.failure or "")
                assert broken.last_success_ms == passed.last_success_ms
                shown = await asyncio.to_thread(run, ["drill", "show"], settings)
                assert shown.returncode == 1 and "FAILED 1 in a row" in shown.stdout
                # a hostile agent forges a passing drill, signed with its own key: ignored
                forged = replace(passed, at_ms=broken.at_ms + 1).to_record()
                value = codec.seal(
                    new_envelope(canary.agent_id, ""), DRILL_SUBJECT, forged, canary.key
                )
                produce(settings, [Sent(DRILLS, canary.agent_id, value)])
                shown = await asyncio.to_thread(run, ["drill", "show"], settings)
                assert shown.returncode == 1 and "FAILED 1 in a row" in shown.stdout
                halts = await asyncio.to_thread(run, ["halts", "--json"], settings)
                in_force = [json.loads(line)["key"] for line in halts.stdout.splitlines()]
                assert control_key(Scope.AGENT, canary.agent_id) not in in_force  # lifted
    registry.close()
