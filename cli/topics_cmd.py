"""`mesh topics ensure|ls`: the topic catalogue on the cluster."""

from __future__ import annotations

import json

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
def list_topics(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per topic, per line."),
) -> None:
    """Show the catalogue and what the cluster has."""
    current = settings()
    admin = TopicAdmin(cluster(current))
    live = admin.topic_partitions()
    table = Table("topic", "partitions", "cleanup", "what")
    for spec in catalogue():
        name = spec.full_name(current.topic_prefix)
        cleanup = spec.configs.get("cleanup.policy", "")
        if as_json:
            print(json.dumps({"topic": name, "partitions": live.get(name), "cleanup": cleanup,
                              "what": spec.what}))  # fmt: skip
            continue
        partitions = str(live[name]) if name in live else "missing"
        table.add_row(name, partitions, cleanup, spec.what)
    if not as_json:
        console.print(table)
