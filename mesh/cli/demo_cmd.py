"""`mesh demo`: the main job of the README."""

from __future__ import annotations

import typer

from mesh.cli.common import console, settings
from mesh.demo.roundtrip import run_round_trip


def demo() -> None:
    """Bring up Kafka and topics, register schemas, and run a signed round trip."""
    report = run_round_trip(settings(), console.print)
    console.print(
        f"[bold]done[/]: {len(report.delivered)} message verified and delivered, "
        f"{len(report.dead_letters)} refused to the dead-letter topic with their reasons"
    )
    if len(report.delivered) != 1 or len(report.dead_letters) != 2:
        raise typer.Exit(1)
