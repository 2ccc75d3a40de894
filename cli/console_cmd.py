"""`mesh console`: the operator console, a live web page over the mesh (console/)."""

from __future__ import annotations

import typer

from cli.common import cluster, console, settings
from cli.views_cmd import task_as_of
from console.serve import run_console, urls

HOST = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default).")
PORT = typer.Option(8090, "--port", min=1, max=65535, help="Port to serve on.")
LINK = typer.Option(False, "--link", help="Print the login link (of `mesh up`'s console) only.")
VIEWER = typer.Option(False, "--viewer", help="With --link: the read-only viewer's link.")
METRICS = typer.Option(
    [], "--processor-metrics",
    help="A processors' /metrics URL (repeatable): their restores, restarts and readiness "
    "in the health view. `mesh up` gives http://127.0.0.1:9464/metrics.",
)  # fmt: skip


def serve(
    host: str = HOST,
    port: int = PORT,
    link: bool = LINK,
    viewer: bool = VIEWER,
    processor_metrics: list[str] = METRICS,
) -> None:
    """Serve the console until Ctrl-C, printing the operator's and the viewer's login links
    (tokens from the state directory); `mesh up` runs it on port 8090."""
    current = settings()
    if link:
        operator_url, viewer_url = urls(cluster(current), host, port)
        console.print(viewer_url if viewer else operator_url, soft_wrap=True)
        return
    run_console(
        cluster(current), host, port, lambda line: console.print(line, soft_wrap=True),
        lambda where, codec: lambda task_id, as_of: task_as_of(where, codec, task_id, as_of),
        processor_metrics,
    )  # fmt: skip
