"""`mesh schemas check|lock|register`: the Avro contracts."""

from __future__ import annotations

import typer

from cli.common import console, settings
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.contracts import check_catalogue, lock_catalogue

app = typer.Typer(help="Check, pin and register the Avro contracts in schemas/.")


@app.command()
def check() -> None:
    """Check every subject's versions for compatibility and drift (exit 1 on a problem)."""
    problems = check_catalogue()
    for problem in problems:
        console.print(f"[red]FAIL[/] {problem}")
    if problems:
        raise typer.Exit(1)
    console.print("schemas ok: every version is compatible and pinned")


@app.command()
def lock() -> None:
    """Pin new schema versions in schemas/lock.json (refuses a changed, published version)."""
    added = lock_catalogue()
    console.print("\n".join(f"pinned {key}" for key in added) or "nothing new to pin")


@app.command()
def register() -> None:
    """Register every version of every subject with the registry in use."""
    registry = open_registry(settings())
    try:
        for subject, schema_id in sorted(Serde(registry).register_all().items()):
            console.print(f"{schema_id:>5}  {subject}")
    finally:
        registry.close()
