"""Issue 21, KPIs and the compliance report: on the broker, a scripted fleet's KPIs from the
kpis processor equal the hand-computed values, `mesh kpis --from-audit` (the same facts folded
again from the audit log's original bytes) equals the processor, and `mesh report` renders a
page whose figures say the same."""

from __future__ import annotations

import asyncio
import json
import time
from html.parser import HTMLParser
from typing import Any

from mesh.adapters.keyfiles import control_signers, mesh_key
from mesh.settings import Cluster, Settings
from processors.audit import AuditProcessor
from processors.kpis import KpisProcessor
from processors.runtime.engine import Engine
from tests.integration.fleet import codec_for, running
from tests.integration.test_cli import run
from tests.integration.test_sidecar import Mesh, _until, registry_processor

EXPECTED = {
    "fleet": {"tasks": 2, "completed": 1, "failed": 1, "value_usd": 7.5, "cost_usd": 0.75,
              "manual_halts": 1, "halts": 1, "handoffs": 1, "roi": 9.0,
              "cost_per_task_usd": 0.375, "cost_per_completed_task_usd": 0.75,
              "intervention_rate_per_100": 50.0, "blast_radius_agents_per_halt": 1.0,
              "task_success_rate": 0.5, "handoff_failure_rate": 0.0},
    "workflow:refunds": {"tasks": 2, "completed": 1, "failed": 1, "value_usd": 7.5,
                         "cost_usd": 0.25, "roi": 29.0, "handoffs": 1,
                         "baseline_usd_per_task": 10.0, "saving_per_task_usd": 9.75},
    "agent:worker": {"completed": 1, "failed": 1, "value_usd": 7.5, "cost_usd": 0.75,
                     "halts": 1, "manual_halts": 1},
}  # fmt: skip


def kpis(settings: Settings, *extra: str) -> dict[str, dict[str, Any]]:
    out = run(["kpis", "--format", "json", "--workflows", str(settings.state_dir / "w.toml"),
               *extra], settings)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return {row["scope"]: row for row in map(json.loads, out.stdout.splitlines())}


def matches(found: dict[str, dict[str, Any]]) -> bool:
    return all(
        scope in found and all(found[scope][k] == v for k, v in want.items())
        for scope, want in EXPECTED.items()
    )


async def test_kpis_equal_hand_computed_values_and_the_audit_fold(
    settings: Settings, topics: object
) -> None:
    (settings.state_dir / "w.toml").write_text("[workflow.refunds]\nusd_per_run = 10\n")
    codec, registry = codec_for(settings)
    mesh = Mesh(settings, codec)
    cluster = Cluster.of(settings)
    engines = [
        Engine.keyed(registry_processor(settings), cluster, codec),
        Engine.keyed(AuditProcessor(mesh_key(settings)), cluster, codec),
        Engine.keyed(KpisProcessor(codec.serde, control_signers(settings)), cluster, codec),
    ]
    started_ms = int(time.time() * 1000)
    with running(engines):
        async with mesh.sidecar("intake") as intake, mesh.sidecar("worker") as worker:
            await _until(lambda: {"intake", "worker"} <= set(worker.agents()), "registered")
            await asyncio.sleep(2)  # the processors' registry tables catch up too
            await intake.task_event("t1", "REQUESTED", workflow="refunds")
            await intake.task_event("t1", "HANDED_OFF", target="worker")
            await intake.send("worker", text="refund order 1", task_id="t1")
            got = await worker.receive(timeout_s=10)
            assert got is not None
            await worker.report_model_call("m", cost_usd=0.25, cause=got)  # for t1
            await worker.task_event("t1", "COMPLETED", value_usd=7.5)
            await intake.task_event("t2", "REQUESTED", workflow="refunds")
            await worker.report_model_call("m", cost_usd=0.5)  # no task
            await worker.task_event("t2", "FAILED", summary="no such order")
            halted = await asyncio.to_thread(
                run, ["halt", "worker", "--reason", "a look", "--wait"], settings
            )
            assert halted.returncode == 0, halted.stdout + halted.stderr
            resumed = await asyncio.to_thread(run, ["resume", "worker", "--reason", "ok"], settings)
            assert resumed.returncode == 0

        deadline = time.monotonic() + 60
        while not matches(live := await asyncio.to_thread(kpis, settings)):
            assert time.monotonic() < deadline, json.dumps(live, indent=1)
            await asyncio.sleep(1)
        audited = await asyncio.to_thread(kpis, settings, "--from-audit")
        assert audited == live  # every figure of every scope, folded from the audit log
        assert live["workflow:refunds"]["baseline_assumption"] == (
            "existing automation at $10.00 per run"
        )
        table = await asyncio.to_thread(run, ["kpis", "--agent", "worker", "--window", "1h"],
                                        settings)  # fmt: skip
        assert table.returncode == 0 and "agent:worker" in table.stdout

        # the compliance report of the window: opened, its figures read back
        out = settings.state_dir / "report.html"
        window = ["--from", str(started_ms), "--to", str(int(time.time() * 1000) + 1000)]
        wrote = await asyncio.to_thread(run, ["report", *window, "--out", str(out)], settings)
        assert wrote.returncode == 0, wrote.stdout + wrote.stderr
        assert "chain verified" in wrote.stdout
        page = Page()
        page.feed(out.read_text())
        assert "the audit chain of the window verifies" in page.text
        kpi = page.table_after("KPIs of the window")
        fleet = dict(zip(kpi[0], next(r for r in kpi if r[0] == "fleet"), strict=True))
        assert (fleet["tasks"], fleet["completed"], fleet["roi"]) == ("2", "1", "9.0")
        assert fleet["intervention_rate_per_100"] == "50.0"
        halts = page.table_after("Halts (kill-switch and operators)")
        [halt] = halts[1:]
        assert halt[1] == "AGENT worker" and halt[2] == "operator" and halt[3] == "a look"
        assert halt[-1].startswith("audit ")  # each claim names its audit coordinates
        inventory = {row[0]: row for row in page.table_after("Inventory (now)")[1:]}
        assert inventory["worker"][1] == "platform"
        mapping = {row[0]: row for row in page.table_after("Requirements and their evidence")}
        assert "chain verifies" in mapping["EU AI Act Art. 12"][2]
        assert "retention.ms=-1" in mapping["EU AI Act Art. 19, 26(6)"][2]
    registry.close()


class Page(HTMLParser):
    """The report's text and tables (rows of cell texts), in order, after each heading."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.blocks: list[tuple[str, list[list[str]]]] = []  # (preceding heading, table)
        self._heading = ""
        self._in: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("h2", "h3"):
            self._in, self._heading = "heading", ""
        elif tag == "table":
            self.blocks.append((self._heading, []))
        elif tag == "tr":
            self.blocks[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3"):
            self._in = None
        elif tag in ("td", "th") and self._cell is not None:
            self.blocks[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._in == "heading":
            self._heading += data
        if self._cell is not None:
            self._cell.append(data)

    def table_after(self, heading: str) -> list[list[str]]:
        return next(table for h, table in self.blocks if h.startswith(heading))
