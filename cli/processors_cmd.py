"""`mesh processors run NAME...`: processors in the foreground."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import cluster, console, settings
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
) -> None:
    """Run processors until SIGINT/SIGTERM; each commits exactly once per interval."""
    current = settings()
    limits = load_policy(policy)
    where = cluster(current)
    registry = open_registry(current, where)
    try:
        config = EngineConfig(instance=instance, commit_interval_ms=commit_interval_ms)
        options = ProcessorOptions(stale_after_ms=int(stale_after_s * 1000), policy=limits)
        engines = build(names, where, registry, config, options)
        run_processors(engines, console.print)
    finally:
        registry.close()
