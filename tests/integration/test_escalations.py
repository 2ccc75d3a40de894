"""Issue 21, human-in-the-loop escalation: an agent parks a task with a person; the state
projections show it escalated; `mesh escalations` lists it (and `mesh approvals` does not);
an operator's answer, signed and bound to the exact request, wakes the agent, once."""

from __future__ import annotations

import asyncio
import json

from mesh.settings import Cluster, Settings
from processors.runtime.engine import Engine
from processors.state import StateProcessor
from tests.integration.fleet import codec_for, running
from tests.integration.test_cli import run
from tests.integration.test_sidecar import Mesh, _until, registry_processor


async def test_an_escalation_parks_the_task_until_a_person_answers(
    settings: Settings, topics: object
) -> None:
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    engines = [
        Engine.keyed(registry_processor(settings), cluster, codec),
        Engine.keyed(StateProcessor(), cluster, codec),
    ]
    with running(engines):
        async with mesh.sidecar("desk", capabilities=("escalation",)) as desk:
            await _until(lambda: "desk" in desk.agents(), "registered")
            for _ in range(100):  # until the state processor's registry table knows the desk
                await desk.task_event("t-1", "REQUESTED", summary="refund of $4,000")
                await asyncio.sleep(0.2)
                if await desk.context("t-1") is not None:
                    break
            assert await desk.context("t-1") is not None
            waiting = asyncio.create_task(
                desk.escalate("t-1", "refund over $1,000", details={"usd": 4000}, wait_s=60)
            )

            async def parked() -> bool:
                state = await desk.context("t-1")
                return state is not None and state["status"] == "ESCALATED"

            for _ in range(200):
                if await parked():
                    break
                await asyncio.sleep(0.1)
            assert await parked(), "the state projections never showed the task escalated"
            listed = await asyncio.to_thread(run, ["escalations", "ls", "--json"], settings)
            [pending] = [json.loads(line) for line in listed.stdout.splitlines()]
            assert pending["arguments"] == {
                "task_id": "t-1", "reason": "refund over $1,000", "details": {"usd": 4000},
            }  # fmt: skip
            assert pending["state"] == "pending" and pending["agent_id"] == "desk"
            approvals = await asyncio.to_thread(run, ["approvals", "ls"], settings)
            assert "no approval requests waiting" in approvals.stdout  # not a tool call
            wrong = await asyncio.to_thread(
                run, ["approvals", "approve", pending["request_id"], "--note", "x"], settings
            )
            assert wrong.returncode == 1 and "no approval request" in wrong.stderr
            assert not waiting.done()

            answer = ["escalations", "approve", pending["request_id"], "--note", "go ahead"]
            approved = await asyncio.to_thread(run, answer, settings)
            assert approved.returncode == 0, approved.stdout + approved.stderr
            decided = await asyncio.wait_for(waiting, 20)
            assert (decided.decision, decided.note) == ("APPROVED", "go ahead")
            assert decided.decided_by is not None and decided.decided_by.startswith("operator:")
            again = await asyncio.to_thread(run, answer, settings)
            assert again.returncode == 1 and "is used; only a pending one" in again.stderr

            second = asyncio.create_task(desk.escalate("t-2", "unsure", wait_s=60))
            await _until(lambda: len(desk.reports.approvals.book.requests) == 2, "asked")  # type: ignore[union-attr]
            [new] = [
                r for r in desk.reports.approvals.book.requests.values()  # type: ignore[union-attr]
                if r.state(2**62) != "used" and r.request_id != pending["request_id"]
            ]  # fmt: skip
            no = ["escalations", "reject", new.request_id, "--note", "not this one"]
            assert (await asyncio.to_thread(run, no, settings)).returncode == 0
            rejected = await asyncio.wait_for(second, 20)
            assert (rejected.decision, rejected.note) == ("REJECTED", "not this one")
            for _ in range(100):
                state = await desk.context("t-1")
                if state is not None and state["status"] == "ASSIGNED":
                    break
                await asyncio.sleep(0.1)
            assert state is not None and state["status"] == "ASSIGNED"  # back with the agent
    registry.close()
