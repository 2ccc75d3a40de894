"""Run the console on this host (`mesh console`, and `mesh up`'s ``console`` service)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

import uvicorn

from console.app import build_app
from console.auth import load_tokens
from console.feed import Feed
from console.records import TaskLookup
from mesh.adapters.keyfiles import trust_anchors
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import PublicKeys
from mesh.settings import Cluster

__all__ = ["run_console", "urls"]


def urls(cluster: Cluster, host: str, port: int) -> tuple[str, str]:
    """The operator's and the viewer's login links."""
    tokens = load_tokens(cluster.settings.state_dir)
    base = f"http://{host}:{port}/"
    return f"{base}?token={tokens.operator}", f"{base}?token={tokens.viewer}"


def run_console(
    cluster: Cluster,
    host: str,
    port: int,
    say: Callable[[str], None],
    tasks: Callable[[Cluster, MessageCodec], TaskLookup] | None = None,
    processor_metrics: Sequence[str] = (),
) -> None:
    """Serve until Ctrl-C or SIGTERM. ``tasks`` makes the task view's lookup (the service
    that starts the console gives it: the rebuild is the state processor's fold);
    ``processor_metrics``: the processors' ``/metrics`` URLs, for the health view."""
    registry = open_registry(cluster.settings, cluster)
    try:
        codec = MessageCodec(Serde(registry), PublicKeys())
        feed = Feed(cluster, codec, trust_anchors(cluster.settings),
                    processor_metrics=processor_metrics)  # fmt: skip
        tokens = load_tokens(cluster.settings.state_dir)
        lookup = None if tasks is None else tasks(cluster, codec)
        app = build_app(cluster, feed, tokens, task_lookup=lookup)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        operator, viewer = urls(cluster, host, port)
        lines = (f"serving on http://{host}:{port}/", f"operator {operator}",
                 f"read-only {viewer}")  # fmt: skip
        threading.Thread(target=_announce, args=(server, lines, say), daemon=True).start()
        server.run()
    finally:
        registry.close()


def _announce(server: uvicorn.Server, lines: Iterable[str], say: Callable[[str], None]) -> None:
    """Print the links once the socket listens, not before: whoever reads them (a person, a
    test, a supervisor) may open them at once."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    for line in lines:
        say(f"console: {line}")
