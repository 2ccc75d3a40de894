"""The demo fleet `mesh demo` runs: six scripted agents doing work through Kafka.

No model is called; every agent reports realistic tool calls, token counts and costs.

* ``intake`` opens tasks (REQUESTED, the request in the shared context) and hands each to the
  ``research`` capability; it re-routes a task nobody finished within a deadline.
* ``research-a`` and ``research-b`` search and summarise (``findings`` in the context), then
  hand off to ``drafting``. Partway through, ``research-b`` goes rogue on one task: it keeps
  searching, query after query, each call under a permit. The chain's budget stops it: the
  kill-switch (with ``demo/policies/killswitch.toml``) halts that one chain, the sidecar
  refuses every further permit for it, and intake re-routes the task, while ``research-b``
  goes on serving the other tasks' chains.
* ``drafting`` writes a draft (``draft`` in the context) and hands off to ``review``.
* ``review`` completes most tasks (with a business value) and escalates every fourth to the
  ``escalation`` capability, the help desk (``human-desk``). The desk parks the task with a
  person through the real escalation path (``Sidecar.escalate``: an ``ESCALATED`` task, a
  request an operator answers with `mesh escalations approve`), played by :mod:`demo.person`.

``review`` and ``human-desk`` run in production, so ``drafting`` and ``review`` are certified
before any work (:mod:`demo.gates`): on a fresh mesh, ``review`` is refused production until
a drill of its kill-switch passes.

Every agent is a real sidecar: signed messages on its own inbox, telemetry, registration,
heartbeats; the registry, state, audit and kill-switch processors run as `mesh up` started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from demo.gates import certify_fleet
from demo.person import answer_escalations
from mesh.adapters.commands import send_command
from mesh.adapters.keyfiles import trust_anchors
from mesh.adapters.policies import publish_policy, read_policies
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, Scope
from mesh.domain.identity import PublicKeys
from mesh.domain.policies import FLEET, canonical
from mesh.errors import AgentRefusedError
from mesh.settings import Cluster
from sidecar.core import Delivery, Sidecar
from sidecar.spec import AgentSpec

__all__ = ["KILLSWITCH_POLICY", "WORKFLOW", "WORKFLOWS", "FleetReport", "run_fleet"]

Say = Callable[[str], None]
Handler = Callable[[Sidecar, Delivery], Awaitable[None]]
ROGUE = "research-b"
ROGUE_TASK = 4  # intake hands this task to the rogue by name; on it, the rogue loops
#: The kill-switch policy `mesh demo` starts the processors with (its chain budget).
KILLSWITCH_POLICY = Path(__file__).resolve().parent / "policies" / "killswitch.toml"
REROUTE_AFTER_S = 6.0
#: The kind of task the demo runs (its KPIs are reported under it), and what one costs without
#: agents (``mesh kpis --workflows``).
WORKFLOW = "customer-request"
WORKFLOWS = Path(__file__).resolve().parent / "workflows.toml"


@dataclass
class FleetReport:
    tasks: int = 0
    completed: set[str] = field(default_factory=set)
    escalated: set[str] = field(default_factory=set)
    rerouted: int = 0
    messages: int = 0
    spend_usd: dict[str, float] = field(default_factory=dict)
    halt: dict[str, Any] | None = None
    halt_latency_ms: float | None = None
    #: When the rogue's sidecar first refused work for its halted chain (epoch ms).
    refused_at_ms: float | None = None
    seconds: float = 0.0


#: Every demo agent's way back (evidence for the rollback gate of mesh.domain.gates).
ROLLBACK = "redeploy the previous release tag; its certification is in the registry"


def specs() -> list[AgentSpec]:
    return [replace(spec, rollback_note=ROLLBACK) for spec in _specs()]


def _specs() -> list[AgentSpec]:
    return [
        AgentSpec("intake", ("intake",), "opens tasks", depends_on_agents=("research-a",)),
        AgentSpec(
            "research-a",
            ("research",),
            "searches and summarises",
            depends_on_tools=("search",),
            depends_on_agents=("drafting",),
        ),
        AgentSpec(
            "research-b",
            ("research",),
            "searches and summarises",
            depends_on_tools=("search",),
            depends_on_agents=("drafting",),
        ),
        AgentSpec("drafting", ("drafting",), "writes drafts", depends_on_agents=("review",)),
        AgentSpec("review", ("review",), "reviews drafts", depends_on_agents=("human-desk",)),
        AgentSpec("human-desk", ("escalation",), "a person signs off hard cases"),
    ]


#: The operator's policies (policy as code: files in the repository, `mesh policy check`): the
#: fleet default, and the two agents that message production agents, whose recipients and
#: tools are bounded (a production gate: mesh.domain.gates).
POLICIES = Path(__file__).resolve().parent / "policies"
_TARGETS = {FLEET: "fleet.json", "drafting": "drafting.json", "review": "review.json"}


def put_policies(cluster: Cluster, serde: Serde) -> str:
    """Put the operator's policies in force (unless they already are): the fleet's limits
    are the operator's, and an agent's own policy can only narrow them."""
    codec = MessageCodec(serde, PublicKeys())
    signers = trust_anchors(cluster.settings)
    book = read_policies(cluster, codec, signers).book
    shown = []
    for target, name in _TARGETS.items():
        policy = json.loads((POLICIES / name).read_text())
        held = book.targets.get(target)
        if held is None or held.policy_json != canonical(policy):
            reason = f"the demo's policy for {target}"
            held = publish_policy(cluster, codec, signers, target, policy, reason)
        shown.append(f"{'fleet default' if target == FLEET else target} v{held.version}")
    return f"policy: the operator's {', '.join(shown)} in force"


async def run_fleet(
    cluster: Cluster,
    serde: Serde,
    say: Say,
    tasks: int = 12,
    hold: Callable[[FleetReport], Awaitable[None]] | None = None,
) -> FleetReport:
    """Attach the fleet, run ``tasks`` through it and report; ``hold(report)``, if given, is
    awaited with the fleet still attached (heartbeating, the runaway chain's halt in force)
    before the fleet detaches (`mesh demo` stays attached until Ctrl-C)."""
    report = FleetReport(tasks=tasks)
    started = time.monotonic()
    say(await asyncio.to_thread(put_policies, cluster, serde))
    fleet = {s.agent_id: Sidecar(cluster, serde, s, heartbeat_s=2.0) for s in specs()}
    await asyncio.gather(*(sidecar.start() for sidecar in fleet.values()))
    say(f"fleet attached: {', '.join(fleet)}")
    if fleet[ROGUE].halt is not None:  # halted by a previous demo run: lift it, on the record
        await asyncio.to_thread(
            send_command,
            cluster,
            Action.RESUME,
            Scope.AGENT,
            ROGUE,
            "mesh demo starts again",
        )
        while fleet[ROGUE].halt is not None:  # noqa: ASYNC110 - set by the control follower
            await asyncio.sleep(0.05)
        say(f"{ROGUE} was halted by an earlier run: resumed by the operator")
    intake = fleet["intake"]
    while not set(fleet) <= set(intake.agents()):  # noqa: ASYNC110 - polls another task's view
        await asyncio.sleep(0.1)
    await certify_fleet(cluster, serde, fleet, say)
    workers = [
        asyncio.create_task(_work(fleet[name], handler, say, report))
        for name, handler in _HANDLERS.items()
    ]
    workers.append(asyncio.create_task(answer_escalations(cluster, serde, say)))
    try:
        await _intake(intake, tasks, report, say)
        _account(report, fleet, started)
        if hold is not None:  # the workers still serve: the fleet stays live while held
            await hold(report)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if not report.seconds:
            _account(report, fleet, started)
        await asyncio.gather(*(sidecar.stop() for sidecar in fleet.values()))
    return report


def _account(report: FleetReport, fleet: dict[str, Sidecar], started: float) -> None:
    report.halt = _chain_halt(fleet[ROGUE], report)
    report.messages = sum(s.counters.sent for s in fleet.values())
    report.spend_usd = {name: s.counters.spend_usd for name, s in fleet.items()}
    report.seconds = time.monotonic() - started


async def _intake(intake: Sidecar, tasks: int, report: FleetReport, say: Say) -> None:
    run = uuid.uuid4().hex[:6]
    open_tasks: dict[str, float] = {}
    for i in range(tasks):
        task_id = f"task-{run}-{i:02d}"
        await intake.task_event(
            task_id, "REQUESTED", capability="research", summary=f"customer request {i}",
            workflow=WORKFLOW,
        )  # fmt: skip
        await intake.write_context(task_id, "request", {"topic": _TOPICS[i % len(_TOPICS)]})
        if i == ROGUE_TASK:
            await intake.send(ROGUE, task_id=task_id, data={"index": i})
        else:
            await intake.send(capability="research", task_id=task_id, data={"index": i})
        open_tasks[task_id] = time.monotonic()
        say(f"intake      -> research      {task_id} requested")
        await _collect(intake, open_tasks, report, say, 0.25)
    deadline = time.monotonic() + 90
    while open_tasks and time.monotonic() < deadline:
        for task_id, since in list(open_tasks.items()):
            if time.monotonic() - since > REROUTE_AFTER_S:
                report.rerouted += 1
                open_tasks[task_id] = time.monotonic()
                index = int(task_id.rsplit("-", 1)[1])
                await intake.send(
                    capability="research", task_id=task_id, data={"index": index, "retry": True}
                )
                say(f"intake      -> research      {task_id} re-routed (no answer in time)")
        await _collect(intake, open_tasks, report, say, 0.5)


async def _collect(
    intake: Sidecar, open_tasks: dict[str, float], report: FleetReport, say: Say, for_s: float
) -> None:
    until = time.monotonic() + for_s
    while (left := until - time.monotonic()) > 0:
        done = await intake.receive(timeout_s=left)
        if done is None or done.task_id is None:
            continue
        if open_tasks.pop(done.task_id, None) is not None:
            report.completed.add(done.task_id)
            if (done.data() or {}).get("escalated"):
                report.escalated.add(done.task_id)
            say(f"intake      <- {done.sender:<13} {done.task_id} done")


def _chain_halt(rogue: Sidecar, report: FleetReport) -> dict[str, Any] | None:
    """The halt that stopped the rogue's chain (this run's), with its latency: from the
    triggering event to the sidecar's first refusal."""
    halts = [h for h in rogue.halts().values() if h["scope"] == "CHAIN"]
    mine = [h for h in halts if h.get("trigger_produced_at")]
    halt = max(mine, key=lambda h: h["trigger_produced_at"], default=None)
    if halt is not None and report.refused_at_ms is not None:
        report.halt_latency_ms = max(0.0, report.refused_at_ms - halt["trigger_produced_at"])
    return halt


async def _work(sidecar: Sidecar, handler: Handler, say: Say, report: FleetReport) -> None:
    while True:
        message = await sidecar.receive(timeout_s=1.0)
        if message is None:
            continue
        try:
            with sidecar.serving(message):  # its permits and reports count towards its chain
                await handler(sidecar, message)
        except AgentRefusedError as exc:
            if getattr(exc, "rule", "") == "chain_halted" and report.refused_at_ms is None:
                report.refused_at_ms = time.time() * 1000
            say(f"{sidecar.agent_id:<11} !! refused: {exc}")


async def _research(me: Sidecar, msg: Delivery) -> None:
    data = msg.data() or {}
    task_id, index = msg.task_id or "", int(data.get("index", 0))
    if me.agent_id == ROGUE and index == ROGUE_TASK and not data.get("retry"):
        for n in range(60):  # the runaway: query after query, until its chain is stopped
            async with me.tool("search", {"q": f"everything, page {n}"}, cost_usd=0.01) as call:
                await asyncio.sleep(0.02)
                call.cost_usd = 0.01
    topic = _TOPICS[index % len(_TOPICS)]
    async with me.tool("search", {"q": topic, "task": task_id}, cost_usd=0.002) as call:
        await asyncio.sleep(_ms(180) / 1000 / 20)  # the search (time compressed)
        call.cost_usd = 0.002
    await _model(me, 1800, 350)
    with contextlib.suppress(AgentRefusedError):
        await me.write_context(task_id, "findings", {"by": me.agent_id, "sources": 3})
    await me.task_event(task_id, "HANDED_OFF", target="drafting", capability="drafting")
    await me.send(capability="drafting", reply_to=msg, task_id=task_id, data={"index": index})


async def _drafting(me: Sidecar, msg: Delivery) -> None:
    await _model(me, 2600, 900)
    await me.write_context(msg.task_id or "", "draft", {"words": _JITTER.randint(300, 900)})
    await me.task_event(msg.task_id or "", "HANDED_OFF", target="review", capability="review")
    await me.send(capability="review", reply_to=msg, data=msg.data())


async def _review(me: Sidecar, msg: Delivery) -> None:
    await _model(me, 1500, 200)
    index = int((msg.data() or {}).get("index", 0))
    task_id = msg.task_id or ""
    if index % 4 == 3:
        await me.task_event(task_id, "HANDED_OFF", target="human-desk", capability="escalation")
        await me.send(capability="escalation", reply_to=msg, data=msg.data())
        return
    await me.task_event(task_id, "COMPLETED", summary="approved", value_usd=40.0)
    await me.send("intake", reply_to=msg, data={"index": index})


async def _human(me: Sidecar, msg: Delivery) -> None:
    """The desk parks the task with a person (the real escalation path, demo.person answers
    as `mesh escalations approve` would) and completes it once signed off."""
    task_id = msg.task_id or ""
    async with me.tool("ticket", {"task": task_id}):
        await asyncio.sleep(0.05)  # the ticket for the person
    answer = await me.escalate(
        task_id, "a hard case: a person signs it off", details=msg.data(), wait_s=60
    )
    if answer.decision != "APPROVED":
        await me.task_event(task_id, "FAILED", summary=f"rejected by a person: {answer.note}")
        return
    await me.task_event(task_id, "COMPLETED", summary="signed off", value_usd=120.0)
    await me.send("intake", reply_to=msg, data={"escalated": True})


async def _model(me: Sidecar, tokens_in: int, tokens_out: int) -> None:
    cost = tokens_in * 3e-6 + tokens_out * 15e-6
    await me.report_model_call(
        "model-sim",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=round(cost, 6),
        latency_ms=_ms(900),
    )


def _ms(typical: float) -> float:
    return round(_JITTER.uniform(0.6, 1.4) * typical, 1)


_JITTER = random.Random()  # noqa: S311 - plausible demo figures, not security
_TOPICS = ["refund policy", "delivery delay", "invoice error", "account access", "upgrade"]
_HANDLERS: dict[str, Handler] = {
    "research-a": _research,
    "research-b": _research,
    "drafting": _drafting,
    "review": _review,
    "human-desk": _human,
}
