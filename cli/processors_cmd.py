"""`mesh processors run NAME...`: processors in the foreground."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli.common import cluster, console, settings
from mesh.adapters import tracing
from mesh.adapters.schemaregistry.factory import open_registry
from processors.killswitch import load_policy
from processors.runtime.engine import EngineConfig
from processors.runtime.runner import PROCESSORS, ProcessorOptions, build, run_processors

app = typer.Typer(help="Run the stream processors.")
_NAMES_HELP = f"Processors to run: {', '.join(PROCESSORS)}."


@app.command()
def run(
    names: list[str] = typer.Argument(..., help=_NAMES_HELP),
    instance: str = typer.Option("0", "--instance", help="Stable id of this instance."),
    commit_interval_ms: int = typer.Option(20, "--commit-interval-ms", min=1, max=60_000),
    stale_after_s: float = typer.Option(
        15.0, "--stale-after-s", min=0.1, help="registry: silence before an agent is stale."
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="killswitch: the policy file (TOML); default: built-in limits."
    ),
    static_membership: bool = typer.Option(
        True,
        "--static-membership/--dynamic-membership",
        help="Rejoin under a stable group.instance.id, so a restarted instance gets its "
        "partitions back at once (default); dynamic: others take over after a crash.",
    ),
    health_file: Path | None = typer.Option(
        None,
        "--health-file",
        help="Touched every second while ready (default: <state>/run/processors-INSTANCE.health"
        "); `mesh processors probe` checks it.",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (`mesh up`: 9464).",
    ),
) -> None:
    """Run processors until SIGINT/SIGTERM; each commits exactly once per interval."""
    current = settings()
    tracing.configure_from_env("agent-mesh-processors")
    limits = load_policy(policy)
    where = cluster(current)
    registry = open_registry(current, where)
    try:
        config = EngineConfig(
            instance=instance,
            commit_interval_ms=commit_interval_ms,
            static_membership=static_membership,
        )
        options = ProcessorOptions(stale_after_ms=int(stale_after_s * 1000), policy=limits)
        engines = build(names, where, registry, config, options)
        health = health_file or _health_file(current.state_dir, instance)
        run_processors(engines, console.print, health_file=health, metrics_port=metrics_port)
    finally:
        registry.close()


def _health_file(state_dir: Path, instance: str) -> Path:
    return state_dir / "run" / f"processors-{instance}.health"


@app.command()
def probe(
    instance: str = typer.Option("0", "--instance", help="The instance to check."),
    health_file: Path | None = typer.Option(None, "--health-file", help="As given to run."),
    max_age_s: float = typer.Option(
        10.0, "--max-age-s", min=1.0, help="Older than this: not healthy."
    ),
) -> None:
    """Exit 0 if the processors of this instance are assigned, restored and running (a
    liveness/readiness probe for systemd or Kubernetes), else 1 saying why."""
    path = health_file or _health_file(settings().state_dir, instance)
    try:
        written = float(path.read_text().strip())
    except (OSError, ValueError):
        console.print(
            f"not ready: no health file at {path} (not started, still restoring, or stopped)"
        )
        raise typer.Exit(1) from None
    age = time.time() - written
    if age > max_age_s:
        console.print(f"not healthy: {path} was last touched {age:.0f}s ago (limit {max_age_s:g}s)")
        raise typer.Exit(1)
    console.print(f"ok: ready, last seen {age:.1f}s ago")
