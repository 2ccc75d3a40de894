"""`mesh kpis`: ROI, cost per task, intervention rate, blast radius, mean time to halt, task
success and handoff failure, per workflow, per agent and for the fleet (mesh.domain.kpis)."""

from __future__ import annotations

import csv
import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.common import console, reading, settings
from mesh.adapters.kpis import kpis_from_audit, read_kpis
from mesh.domain.kpis import FLEET, WINDOWS, Baseline, KpiView, figures, parse_baselines
from mesh.errors import ConfigError


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


_COLUMNS = (
    ("tasks", "tasks"),
    ("completed", "done"),
    ("task_success_rate", "success"),
    ("value_usd", "value $"),
    ("cost_usd", "cost $"),
    ("roi", "ROI"),
    ("cost_per_task_usd", "$/task"),
    ("cost_per_completed_task_usd", "$/done"),
    ("intervention_rate_per_100", "interv./100"),
    ("blast_radius_agents_per_halt", "blast"),
    ("mean_time_to_halt_ms", "MTTH ms"),
    ("handoff_failure_rate", "handoff fail"),
    ("saving_per_task_usd", "saving $/task"),
)


def kpis(
    workflow: str | None = typer.Option(None, "--workflow", help="Only this workflow."),
    agent: str | None = typer.Option(None, "--agent", help="Only this agent."),
    window: str = typer.Option("all", "--window", help="5m, 1h, 1d or all."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, json or csv."),
    from_audit: bool = typer.Option(
        False,
        "--from-audit",
        help="Fold the same facts again from mesh.audit.v1, not the "
        "kpis processor's totals (the two agree once both have read everything).",
    ),
    workflows: Path | None = typer.Option(
        None, "--workflows", help="What a task of each workflow costs without agents (TOML)."
    ),
) -> None:
    """The KPIs of the fleet, each workflow and each agent, over a window."""
    if window not in WINDOWS:
        raise typer.BadParameter(
            f"{window!r} is not one of {', '.join(WINDOWS)}", param_hint="--window"
        )
    baselines = baselines_of(workflows)
    with reading(settings()) as (where, codec):
        view: KpiView = (
            kpis_from_audit(where, codec).book if from_audit else read_kpis(where, codec.serde)
        )
    source = "mesh.audit.v1 (--from-audit)" if from_audit else "mesh.kpis.v1"
    rows = kpi_rows(view, _scopes(view, workflow, agent), window, baselines)
    print_kpis(rows, fmt, f"KPIs over {window}, from {source}")


def kpi_rows(
    view: KpiView, scopes: list[str], window: str, baselines: dict[str, Baseline]
) -> list[dict[str, Any]]:
    """One row of figures per scope over ``window`` (with the workflow's baseline if any)."""
    now_ms = int(time.time() * 1000)
    return [
        {"scope": s, "window": window, **figures(view.window(s, window, now_ms), _of(s, baselines))}
        for s in scopes
    ]


def baselines_of(path: Path | None) -> dict[str, Baseline]:
    if path is None:
        return {}
    try:
        return parse_baselines(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read the workflows file {path}: {exc.strerror}") from exc


def _of(scope: str, baselines: dict[str, Baseline]) -> Baseline | None:
    kind, _, name = scope.partition(":")
    return baselines.get(name) if kind == "workflow" else None


def _scopes(view: KpiView, workflow: str | None, agent: str | None) -> list[str]:
    if workflow is not None or agent is not None:
        return [s for s in (f"workflow:{workflow}" if workflow else None,
                            f"agent:{agent}" if agent else None) if s]  # fmt: skip
    found = view.scopes()
    order = {"fleet": 0, "workflow": 1, "agent": 2}
    return sorted(set(found) | {FLEET}, key=lambda s: (order.get(s.partition(":")[0], 3), s))


def print_kpis(rows: list[dict[str, Any]], fmt: Format, title: str) -> None:
    if fmt is Format.json:
        for row in rows:
            print(json.dumps(row))
        return
    if fmt is Format.csv:
        names = sorted({k for row in rows for k in row}, key=lambda k: (k != "scope", k))
        writer = csv.DictWriter(sys.stdout, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table("scope", *(label for _, label in _COLUMNS), title=title)
    for row in rows:
        table.add_row(row["scope"], *(_cell(row.get(name)) for name, _ in _COLUMNS))
    console.print(table)
    for row in rows:
        if row.get("baseline_assumption"):
            console.print(
                f"{row['scope']}: against ${row['baseline_usd_per_task']:.2f} per task without "
                f"agents ({row['baseline_assumption']}): saving {_cell(row['saving_usd'])} "
                f"over {row['completed']} completed task(s)"
            )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
