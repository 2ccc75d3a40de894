"""`mesh drill run|show`: the scheduled kill-switch drill (stack.drill)."""

from __future__ import annotations

import asyncio
import json
import time

import typer

from cli.common import cluster, console, reading, settings
from mesh.adapters.drills import read_drills
from mesh.adapters.keyfiles import trust_anchors
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.domain.drills import drill_health
from mesh.settings import Cluster
from stack.drill import Drill, canary_sidecar

app = typer.Typer(help="Prove on a schedule that the kill-switch can still halt (a canary).")


@app.command()
def run(
    every: float = typer.Option(300.0, "--every", min=5, help="Seconds between drills."),
    deadline: float = typer.Option(5.0, "--deadline", min=0.5, max=120, help="Seconds per step."),
    once: bool = typer.Option(False, "--once", help="One drill, then exit (0 if it passed)."),
) -> None:
    """Host the canary's sidecar and drill it: a signed halt, its HALT_ACK, a resume."""
    current = settings()
    where = cluster(current)
    registry = open_registry(current, where)
    try:
        passed = asyncio.run(_drill(where, Serde(registry), every, deadline, once))
    finally:
        registry.close()
    if not passed:
        raise typer.Exit(1)


async def _drill(where: Cluster, serde: Serde, every: float, deadline: float, once: bool) -> bool:
    canary = canary_sidecar(where, serde)
    async with canary:
        drill = Drill(where, canary, every, deadline)
        if once:
            result = await drill.run_once()
            _say(f"drill: {'passed' if result.ok else 'FAILED: ' + str(result.failure)}")
            return result.ok
        await drill.run_forever(_say)
    return True


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


@app.command()
def show(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per canary, per line."),
) -> None:
    """The last drill of each canary and whether it says the kill-switch can halt (exit 1 if
    not)."""
    current = settings()
    with reading(current) as (where, codec):
        last = read_drills(where, codec, trust_anchors(current))
    now_ms = int(time.time() * 1000)
    healthy = bool(last)
    for canary, result in sorted(last.items()):
        ok, line = drill_health(result, now_ms)
        healthy &= ok
        if as_json:
            print(json.dumps({**result.to_record(), "healthy": ok, "summary": line}))
        else:
            console.print(f"{canary}: {line}", highlight=False, soft_wrap=True)
    if not last and not as_json:
        console.print("no drill has run: `mesh up` runs one every 5 minutes (`mesh drill run`)")
    if not healthy:
        raise typer.Exit(1)
