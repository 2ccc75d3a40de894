"""`mesh send`: poke the mesh by hand, as an agent of its own.

The command attaches a short-lived sidecar (agent ``--from``, default ``cli``: a registered,
signed agent like any other, bound by the operator's policy in force for it), sends one message
to an agent or a capability, optionally waits for the reply to it, and detaches (retiring the
agent). Nothing goes around the sidecar's checks.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer

from cli.common import cluster, console, settings
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.settings import Cluster
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec


def send(
    to: str | None = typer.Argument(None, help="The agent to send to."),
    capability: str | None = typer.Option(None, "--capability", help="Or: any agent with it."),
    text: str | None = typer.Option(None, "--text", help="A text part."),
    data: str | None = typer.Option(None, "--data", help="A data part: JSON."),
    task: str | None = typer.Option(None, "--task", help="The task it belongs to."),
    sender: str = typer.Option("cli", "--from", help="The agent id to send as."),
    reply_s: float = typer.Option(
        0.0, "--wait-reply", min=0, max=600, help="Seconds to wait for a reply (0: none)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reply as JSON."),
) -> None:
    """Send one message as agent --from (default cli) and print its id (and the reply)."""
    if (to is None) == (capability is None):
        raise typer.BadParameter("name exactly one of AGENT or --capability C")
    if text is None and data is None:
        raise typer.BadParameter("give --text, --data, or both")
    try:
        body_data = None if data is None else json.loads(data)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--data is not JSON: {exc}") from exc
    current = settings()
    where = cluster(current)
    registry = open_registry(current, where)
    try:
        reply = asyncio.run(
            _send(where, Serde(registry), sender, to, capability, text, body_data, task, reply_s)
        )
    finally:
        registry.close()
    if reply is None:
        if reply_s:
            console.print(f"no reply within {reply_s:g}s")
            raise typer.Exit(1)
        return
    if as_json:
        print(json.dumps(reply, default=str))
    else:
        console.print(f"reply from {reply['sender']}: {reply.get('text') or reply.get('data')}")


async def _send(
    where: Cluster,
    serde: Serde,
    sender: str,
    to: str | None,
    capability: str | None,
    text: str | None,
    data: Any,
    task: str | None,
    reply_s: float,
) -> dict[str, Any] | None:
    async with Sidecar(where, serde, AgentSpec(sender, description="the mesh CLI")) as me:
        sent = await me.send(to, capability=capability, text=text, data=data, task_id=task)
        console.print(f"sent {sent} from {sender}")
        deadline = asyncio.get_running_loop().time() + reply_s
        while reply_s:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            got = await me.receive(timeout_s=left)
            if got is not None and got.envelope.causation_id == sent:
                return {"message_id": got.message_id, "sender": got.sender,
                        "text": got.text(), "data": got.data()}  # fmt: skip
        return None
