"""`mesh sidecar run`: a sidecar with its local HTTP API, for an agent in any language."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import cluster, console, settings
from mesh.errors import ConfigError
from sidecar.policy import parse_agent_policy
from sidecar.serve import run_sidecar
from sidecar.spec import AgentSpec

app = typer.Typer(help="Attach agents through a sidecar.", no_args_is_help=True)


@app.command("run")
def run(
    agent_id: str = typer.Argument(..., help="The agent's id (its inbox is mesh.inbox.ID.v1)."),
    capability: list[str] = typer.Option([], "--capability", help="A capability it offers."),
    depends_on: list[str] = typer.Option([], "--depends-on", help="An agent it calls."),
    tool: list[str] = typer.Option([], "--uses-tool", help="A tool it declares it uses."),
    policy: Path | None = typer.Option(None, "--policy", help="The agent's policy (JSON file)."),
    description: str = typer.Option("", "--description", help="For its Agent Card."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="0: any free port."),
    environment: str = typer.Option(
        "staging",
        "--environment",
        help="staging or production (production takes messages "
        "only from agents certified for it: mesh gates).",
    ),
    owner: str = typer.Option("platform", "--owner", help="Team or person accountable."),
    version: str = typer.Option("1", "--version", help="The agent's own release version."),
    rollback_note: str = typer.Option(
        "", "--rollback-note", help="How to go back to an earlier version (a gate's evidence)."
    ),
) -> None:
    """Run a sidecar for AGENT_ID on 127.0.0.1 until Ctrl-C or SIGTERM."""
    current = settings()
    text = None
    if policy is not None:
        try:
            text = policy.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the agent policy {policy}: {exc.strerror}") from exc
    spec = AgentSpec(
        agent_id,
        capabilities=tuple(capability),
        description=description,
        depends_on_agents=tuple(depends_on),
        depends_on_tools=tuple(tool),
        policy=parse_agent_policy(text, str(policy)),
        environment=environment,
        owner=owner,
        version=version,
        rollback_note=rollback_note,
    )
    run_sidecar(cluster(current), spec, port, console.print)
