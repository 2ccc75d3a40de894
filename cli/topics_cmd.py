"""`mesh topics ensure|ls`: the topic catalogue on the cluster."""

from __future__ import annotations

import typer
from rich.table import Table

from cli.common import cluster, console, settings
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.domain.topics import catalogue

app = typer.Typer(help="Create and inspect the mesh's topics.")


@app.command()
def ensure() -> None:
    """Create missing topics; refuse if an existing one contradicts the catalogue."""
    current = settings()
    report = TopicAdmin(cluster(current)).ensure()
    for name in report.created:
        console.print(f"created  {name}")
    for name in report.existing:
        console.print(f"ok       {name}")


@app.command("ls")
def list_topics() -> None:
    """Show the catalogue and what the cluster has."""
    current = settings()
    admin = TopicAdmin(cluster(current))
    live = admin.topic_partitions()
    table = Table("topic", "partitions", "cleanup", "what")
    for spec in catalogue():
        name = spec.full_name(current.topic_prefix)
        partitions = str(live[name]) if name in live else "missing"
        table.add_row(name, partitions, spec.configs.get("cleanup.policy", ""), spec.what)
    console.print(table)
