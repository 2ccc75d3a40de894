"""`mesh up`, `mesh down`, `mesh status` and `mesh demo`: the README's main job."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.common import console, reading, settings
from cli.kpis_cmd import Format, baselines_of, kpi_rows, print_kpis
from console.serve import urls
from demo.fleet import KILLSWITCH_POLICY, WORKFLOW, WORKFLOWS, FleetReport, run_fleet
from mesh.adapters.commands import read_halts
from mesh.adapters.drills import read_drills
from mesh.adapters.keyfiles import trust_anchors
from mesh.adapters.kpis import read_kpis
from mesh.adapters.localkafka import local_kafka
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.domain.drills import CANARY, drill_health
from mesh.domain.kpis import FLEET
from mesh.errors import MeshError
from mesh.settings import Cluster, Settings
from stack.supervisor import CONSOLE_PORT
from stack.supervisor import down as stack_down
from stack.supervisor import status as stack_status
from stack.supervisor import up as stack_up

RegistryPort = typer.Option(
    8081, "--registry-port", min=1, max=65535, help="Port of the schema registry's REST API."
)
Policy = typer.Option(None, "--policy", help="Kill-switch policy file (TOML).")
ConsolePort = typer.Option(
    CONSOLE_PORT, "--console-port", min=1, max=65535, help="Port of the operator console."
)


def up(
    registry_port: int = RegistryPort,
    policy: Path | None = Policy,
    console_port: int = ConsolePort,
) -> None:
    """Start Kafka (unless MESH_BOOTSTRAP_SERVERS), topics, schemas, registry API, processors,
    the scheduled drill and the operator console."""
    current = settings()
    where = stack_up(current, console.print, registry_port, policy, console_port)
    console.print(f"[bold green]mesh up[/]: bootstrap {where.bootstrap}; `mesh down` stops it")
    console.print(f"console: {urls(where, '127.0.0.1', console_port)[0]}", soft_wrap=True)


def down() -> None:
    """Stop what `mesh up` started (the local broker only if `mesh up` started it)."""
    stack_down(settings(), console.print)


def status(
    as_json: bool = typer.Option(False, "--json", help="The same, as one JSON object."),
) -> None:
    """What `mesh up` runs: the broker, each service and its restarts, whether the processors
    are ready, and the halts in force; exit 0 only when all is well."""
    current = settings()
    view = _status(current)
    if as_json:
        print(json.dumps(view))
    else:
        _print_status(view)
    if not view["healthy"]:
        raise typer.Exit(1)


def _status(current: Settings) -> dict[str, Any]:
    if current.bootstrap_servers:
        kafka: dict[str, Any] = {"bootstrap": current.bootstrap_servers, "source": "env"}
    else:
        broker = local_kafka(current).status()
        kafka = {"bootstrap": broker.bootstrap, "running": broker.running, "pid": broker.pid}
    services = [
        {
            "name": service.name,
            "running": service.pid is not None,
            "pid": service.pid,
            "restarts": service.restarts.count,
            "last_restart_cause": service.restarts.last_cause or None,
            "given_up": service.restarts.given_up or None,
            "log": str(service.log),
        }
        for service in stack_status(current)
    ]
    age = _age_s(current.state_dir / "run" / "processors-0.health")
    ready = age is not None and age <= 10
    halts, (drill_ok, drill) = _control_plane(current)
    return {
        "kafka": kafka,
        "services": services,
        "processors_ready": ready,
        "processors_last_seen_s": None if age is None else round(age, 1),
        "halts_in_force": halts,
        "drill": {"healthy": drill_ok, "summary": drill},
        "healthy": ready and drill_ok and all(s["running"] for s in services),
    }


def _print_status(view: dict[str, Any]) -> None:
    kafka = view["kafka"]
    if kafka.get("source") == "env":
        console.print(f"kafka: {kafka['bootstrap']} (MESH_BOOTSTRAP_SERVERS)")
    else:
        console.print(
            f"kafka: running at {kafka['bootstrap']} (pid {kafka['pid']})"
            if kafka["running"]
            else "kafka: not running"
        )
    for service in view["services"]:
        state = f"running (pid {service['pid']})" if service["running"] else "not running"
        line = f"{service['name']}: {state}, {service['restarts']} restarts"
        if service["last_restart_cause"]:
            line += f", last after {service['last_restart_cause']}"
        if service["given_up"]:
            line += f"; not started again: {service['given_up']}"
        console.print(line + f" (log {service['log']})")
    console.print(
        f"processors: ready, last seen {view['processors_last_seen_s']:.1f}s ago"
        if view["processors_ready"]
        else "processors: not ready (still restoring, or not running)"
    )
    halts = view["halts_in_force"]
    shown = halts if isinstance(halts, str) else ", ".join(halts) or "none"
    console.print(f"halts in force: {shown}")
    console.print(f"kill-switch drill: {view['drill']['summary']}", highlight=False)


def _age_s(health: Path) -> float | None:
    try:
        return time.time() - float(health.read_text().strip())
    except (OSError, ValueError):
        return None


def _control_plane(current: Settings) -> tuple[list[str] | str, tuple[bool, str]]:
    """The keys of the halts in force, and whether the canary's last scheduled drill proved
    the kill-switch can halt, read with one registry; each says why if it could not be read."""
    try:
        with reading(current) as (where, codec):
            anchors = trust_anchors(current)
            found = read_halts(where, codec, anchors).halts
            last = read_drills(where, codec, anchors).get(CANARY)
    except MeshError as exc:
        return f"unknown ({exc})", (False, f"unknown ({exc})")
    return sorted(found), drill_health(last, int(time.time() * 1000))


Detach = typer.Option(
    None,
    "--detach/--stay",
    help="When the demo is done, detach the fleet (retire it) and exit, or stay attached "
    "until Ctrl-C. Default: stay when run from a terminal, detach otherwise.",
    show_default=False,
)


def demo(
    tasks: int = typer.Option(12, "--tasks", min=6, max=500, help="Tasks intake opens."),
    registry_port: int = RegistryPort,
    detach: bool | None = Detach,
    console_port: int = ConsolePort,
) -> None:
    """Bring the mesh up and run the demo fleet: work, a runaway halted, audit verified; then
    keep the fleet attached until Ctrl-C (or --detach), so that it can be looked at live."""
    current = settings()
    stay = sys.stdin.isatty() if detach is None else not detach
    where = stack_up(current, console.print, registry_port, KILLSWITCH_POLICY, console_port)
    link = urls(where, "127.0.0.1", console_port)[0]
    registry = open_registry(current, where)
    verified: list[bool] = []
    mesh = _invoked_as()

    done_before = _completed(where, registry)

    async def hold(report: FleetReport) -> None:
        _summary(report)
        await asyncio.to_thread(_kpis, where, registry, done_before + len(report.completed))
        verified.append(await asyncio.to_thread(_verify, where.bootstrap))
        console.print(f"watch and steer the fleet in the console: {link}", soft_wrap=True)
        if stay:
            console.print(
                f"the fleet stays attached, the runaway chain's halt in force: try `{mesh} "
                f"agents ls`, `{mesh} halts`, `{mesh} status` in another terminal; Ctrl-C "
                "detaches it",
                soft_wrap=True,
            )
            await _until_interrupted()
            console.print("detaching the fleet (its agents retire)")

    try:
        report = asyncio.run(run_fleet(where, Serde(registry), _say, tasks, hold))
    finally:
        registry.close()
    console.print(f"the mesh keeps running: try `{mesh} agents ls`, `{mesh} halts`, `{mesh} down`")
    if len(report.completed) != report.tasks or report.halt is None or not all(verified):
        raise typer.Exit(1)


async def _until_interrupted() -> None:
    """Wait for Ctrl-C (SIGINT) or SIGTERM, which end the wait instead of the process."""
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    try:
        await interrupted.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _invoked_as() -> str:
    """How to call this command again from here (`.venv/bin/mesh` when that is how it ran)."""
    program = Path(sys.argv[0])
    if program.name != "mesh" or shutil.which("mesh") == str(program.resolve()):
        return "mesh"
    try:
        return str(program.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(program)


def _say(line: str) -> None:
    console.print(f"  {line}", highlight=False)


def _summary(report: FleetReport) -> None:
    table = Table(title="demo fleet", show_header=True)
    table.add_column("agent")
    table.add_column("spend (USD)", justify="right")
    for agent, spend in sorted(report.spend_usd.items()):
        table.add_row(agent, f"{spend:.4f}")
    table.add_row("[bold]fleet[/]", f"[bold]{sum(report.spend_usd.values()):.4f}[/]")
    console.print(table)
    console.print(
        f"tasks: {len(report.completed)}/{report.tasks} completed "
        f"({len(report.escalated)} escalated to a person, {report.rerouted} re-routed); "
        f"messages: {report.messages}; {report.seconds:.1f}s"
    )
    if report.halt is None:
        console.print("[bold red]no halt[/]: the runaway chain was not stopped")
        return
    latency = f"{report.halt_latency_ms:.0f} ms" if report.halt_latency_ms is not None else "?"
    halt = report.halt
    console.print(
        f"halt: chain {halt['target']} of {', '.join(halt['affected_agents'])} by {halt['rule']} "
        f"({halt['reason']}); from the triggering event to its sidecar refusing: {latency}; "
        "the same agents went on serving other chains"
    )


def _completed(where: Cluster, registry: SchemaRegistry) -> int:
    """Tasks of the demo's workflow the kpis processor has counted completed, all time."""
    view = read_kpis(where, Serde(registry))
    return view.window(f"workflow:{WORKFLOW}", "all", int(time.time() * 1000)).completed


def _kpis(where: Cluster, registry: SchemaRegistry, completed: int) -> None:
    """The KPIs of the last hour from mesh.kpis.v1, once the processor has counted this run."""
    deadline = time.monotonic() + 30
    while _completed(where, registry) < completed and time.monotonic() < deadline:
        time.sleep(0.5)
    view = read_kpis(where, Serde(registry))
    rows = kpi_rows(view, [FLEET, f"workflow:{WORKFLOW}"], "1h", baselines_of(WORKFLOWS))
    print_kpis(rows, Format.table, "KPIs over the last hour, from mesh.kpis.v1 (`mesh kpis`)")


def _verify(bootstrap: str) -> bool:
    env = {**os.environ, "MESH_BOOTSTRAP_SERVERS": bootstrap}
    console.print("$ mesh audit verify")
    result = subprocess.run(
        [sys.executable, "-m", "cli", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines()[-3:]:
        console.print(f"  {line}", highlight=False)
    return result.returncode == 0
