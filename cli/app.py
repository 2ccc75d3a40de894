"""The `mesh` command: one Typer app, sub-commands per concern, one error boundary.

Every MeshError is shown as one clear line (exit 1; 2 for bad configuration; 3 for a processor
fenced by a newer instance, which a supervisor must not restart), never as a traceback. Bad
arguments are Typer's usage errors (exit 2). Anything else is a bug: it is shown as one line too
(exit 1), naming ``--debug``, which prints the traceback instead.
"""

from __future__ import annotations

import sys
from importlib import metadata

import typer
from rich.console import Console
from rich.markup import escape

from cli import (
    acl_cmd,
    approvals_cmd,
    audit_cmd,
    console_cmd,
    control_cmd,
    demo_cmd,
    drill_cmd,
    gates_cmd,
    kafka_cmd,
    keys_cmd,
    kpis_cmd,
    policy_cmd,
    processors_cmd,
    registry_cmd,
    report_cmd,
    schemas_cmd,
    send_cmd,
    sidecar_cmd,
    tail_cmd,
    topics_cmd,
    views_cmd,
)
from mesh.errors import ConfigError, MeshError, ProcessorFencedError
from mesh.settings import load_settings

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mesh {metadata.version('agent-mesh')}")
        raise typer.Exit()


app = typer.Typer(
    name="mesh",
    help=(
        "Agent Mesh: an event-sourced control plane for fleets of AI agents, on Apache Kafka. "
        "Add --debug to any command for a traceback on an unexpected error."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Agent Mesh: an event-sourced control plane for fleets of AI agents, on Apache Kafka."""
    if "--help" not in sys.argv[1:]:
        load_settings()  # broken MESH_* configuration: one line, exit 2, whatever the command


app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(approvals_cmd.app, name="approvals")
app.add_typer(approvals_cmd.escalations_app, name="escalations")
app.add_typer(acl_cmd.app, name="acl")
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(schemas_cmd.app, name="schemas")
app.add_typer(registry_cmd.app, name="registry")
app.add_typer(processors_cmd.app, name="processors")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(drill_cmd.app, name="drill")
app.add_typer(gates_cmd.app, name="gates")
app.add_typer(sidecar_cmd.app, name="sidecar")
app.add_typer(views_cmd.agents_app, name="agents")
app.add_typer(views_cmd.state_app, name="state")
app.command("graph")(views_cmd.graph)
app.command("send")(send_cmd.send)
app.command("demo")(demo_cmd.demo)
app.command("up")(demo_cmd.up)
app.command("down")(demo_cmd.down)
app.command("status")(demo_cmd.status)
app.command("halt")(control_cmd.halt)
app.command("resume")(control_cmd.resume)
app.command("halts")(control_cmd.halts)
app.command("tail")(tail_cmd.tail)
app.command("kpis")(kpis_cmd.kpis)
app.command("report")(report_cmd.report)
app.command("console")(console_cmd.serve)

#: soft_wrap: a line is never broken at the terminal's width (or at 80 columns when output is a
#: file or a pipe), so a log or a script reads each message as the one line it is.
_errors = Console(stderr=True, soft_wrap=True, emoji=False)


def main() -> None:
    """Run the CLI. Usage errors are Typer's (exit 2); mesh errors are one line (exit 1 or 2)."""
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except MeshError as exc:
        _errors.print(f"[bold red]error[/] ({exc.code}): {escape(str(exc))}", highlight=False)
        sys.exit(_exit_code(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        _errors.print(
            f"[bold red]error[/] (unexpected): {type(exc).__name__}: {escape(str(exc))}. This is "
            "a bug in the mesh; run the command again with --debug for the traceback and "
            "report it",
            highlight=False,
        )
        sys.exit(1)


def _exit_code(exc: MeshError) -> int:
    if isinstance(exc, ConfigError):
        return 2
    if isinstance(exc, ProcessorFencedError):
        return 3
    return 1
