"""Run one sidecar with its HTTP API until told to stop (``mesh sidecar run``).

The URL and token are written owner-only to ``<MESH_STATE_DIR>/sidecars/<agent>.json``, so an
agent process started beside it (in any language) finds them without them ever appearing on a
command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.settings import Cluster, Settings
from sidecar.core import Sidecar
from sidecar.http import SidecarServer, new_token
from sidecar.spec import AgentSpec

__all__ = ["connection_file", "run_sidecar", "write_connection"]


def connection_file(settings: Settings, agent_id: str) -> Path:
    return settings.state_dir / "sidecars" / f"{agent_id}.json"


def write_connection(settings: Settings, agent_id: str, url: str, token: str) -> Path:
    path = connection_file(settings, agent_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"agent_id": agent_id, "url": url, "token": token}, out)
    os.chmod(path, 0o600)
    return path


def run_sidecar(cluster: Cluster, spec: AgentSpec, port: int, say: Callable[[str], None]) -> None:
    asyncio.run(_serve(cluster, spec, port, say))


async def _serve(cluster: Cluster, spec: AgentSpec, port: int, say: Callable[[str], None]) -> None:
    settings = cluster.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = open_registry(settings, cluster)
    sidecar = Sidecar(cluster, Serde(registry), spec)
    token = new_token()
    server = SidecarServer(sidecar, token, port)
    try:
        await sidecar.start()
        url = await server.start()
        path = write_connection(settings, spec.agent_id, url, token)
        say(f"sidecar of {spec.agent_id!r} on {url} (URL and token in {path})")
        if sidecar.halt:
            say(f"note: {spec.agent_id!r} is halted by {sidecar.halt['rule']}")
        await stop.wait()
    finally:
        await server.stop()
        await sidecar.stop()
        registry.close()
        connection_file(settings, spec.agent_id).unlink(missing_ok=True)
