"""Shared by the benchmarks: results files, the README table, medians, the broker."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def write_results(
    name: str,
    figures: dict[str, Any],
    ratios: dict[str, float],
    notes: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write bench/results/NAME.json and regenerate bench/README.md from every results file.
    ``extra`` adds keys to the file that the README's table leaves out (a soak's samples)."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "figures": figures,
        "ratios": ratios,
        "notes": notes,
        **(extra or {}),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    _write_readme()
    return path


def _write_readme() -> None:
    lines = [
        "# Benchmarks",
        "",
        "Run one with `.venv/bin/python bench/NAME.py` (uses `MESH_BOOTSTRAP_SERVERS`, or starts",
        "the local broker). Each writes `results/NAME.json`; this page is regenerated from those",
        "files. The machine is shared and noisy: figures are medians of interleaved rounds, and",
        "the ratios (mesh path / raw baseline in the same run) are what to compare.",
        "",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        lines += [
            f"## {data['benchmark']}",
            "",
            f"{data['date']}, {data['cores']} cores, Python {data['python']}. {data['notes']}",
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {k} | {_fmt(v)} |" for k, v in data["figures"].items()],
            *[f"| **ratio** {k} | **{v:.2f}** |" for k, v in data["ratios"].items()],
            "",
        ]
    (HERE / "README.md").write_text("\n".join(lines))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
