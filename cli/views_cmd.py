"""Read-only views: `mesh agents ls|show`, `mesh graph`, `mesh state show`."""

from __future__ import annotations

import datetime as dt
import json
import time
from enum import StrEnum
from typing import Any

import typer
from rich.table import Table

from cli.common import cluster, console, parse_time, reading, settings
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.keyfiles import mesh_anchor
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agent_record import to_record
from mesh.domain.agents import AgentState
from mesh.domain.dependencies import dependency_graph, render
from mesh.domain.gates import PRODUCTION, certified_for_production
from mesh.domain.identity import PublicKeys
from mesh.domain.task_record import to_record as task_record
from mesh.errors import UnknownTargetError
from mesh.settings import Cluster
from processors.state.rebuild import rebuild_task

agents_app = typer.Typer(help="The live agent registry.")
state_app = typer.Typer(help="Task state projections.")


class GraphFormat(StrEnum):
    json = "json"
    dot = "dot"
    mermaid = "mermaid"


def _agents() -> dict[str, AgentState]:
    with reading(settings()) as (where, codec):
        return dict(read_agents(where, codec.serde))


@agents_app.command("ls")
def list_agents(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per agent, per line."),
) -> None:
    """Every agent with its status, owner, version, last heartbeat and instances."""
    table = Table(
        "agent", "status", "owner", "version", "environment", "certified", "last heartbeat (UTC)",
        "instances", "skills", "profile",
    )  # fmt: skip
    now_ms = int(time.time() * 1000)
    for agent_id, agent in sorted(_agents().items()):
        record = to_record(agent)
        card = json.loads(record["agent_card_json"] or "{}")
        skills = [s.get("id", "?") for s in card.get("skills", [])]
        instances = [i["instance_id"] for i in record["instances"]]
        profile = _profile(card)
        if as_json:
            print(json.dumps({
                "agent_id": agent_id,
                "status": record["status"],
                "owner": record["owner"],
                "version": record["version"],
                "environment": record["environment"],
                "certified": _certified(agent, now_ms),
                "last_heartbeat": _iso(record["last_heartbeat"]),
                "instances": instances,
                "skills": skills,
                "profile": profile,
            }))  # fmt: skip
            continue
        table.add_row(
            agent_id,
            record["status"],
            record["owner"],
            record["version"],
            record["environment"],
            _certified(agent, now_ms),
            _time(record["last_heartbeat"]),
            str(len(instances)),
            ", ".join(skills),
            profile,
        )
    if not as_json:
        console.print(table)


def _certified(agent: AgentState, now_ms: int) -> str:
    """Whether the agent's current version is certified for production (mesh gates)."""
    if certified_for_production(agent, now_ms):
        return f"production until {_time(agent.certified_until_ms)}"
    if PRODUCTION in agent.certifications:
        return "lapsed"
    if agent.gates_failing:
        return f"no (failing: {', '.join(agent.gates_failing)})"
    return "no"


def _profile(card: dict[str, object]) -> str:
    """The profile the agent's sidecar registered in (``x-mesh`` of its card): in
    development its own policy stands in while no operator policy is in force."""
    extension = card.get("x-mesh")
    profile = extension.get("profile") if isinstance(extension, dict) else None
    if profile == "development":
        return "development (own policy may stand in)"
    return str(profile or "-")


@agents_app.command("show")
def show_agent(agent_id: str) -> None:
    """One agent's full record as JSON."""
    agent = _agents().get(agent_id)
    if agent is None:
        raise UnknownTargetError(
            f"no agent {agent_id!r} in the registry; `mesh agents ls` lists the agents"
        )
    record = to_record(agent)
    record["public_key"] = record["public_key"].hex()
    record["key_signature"] = record["key_signature"].hex()
    record["agent_card"] = json.loads(record.pop("agent_card_json"))
    record["last_heartbeat"] = _iso(record["last_heartbeat"])  # times: ISO 8601, UTC
    record["updated_at"] = _iso(record["updated_at"])
    for instance in record["instances"]:
        instance["last_heartbeat"] = _iso(instance["last_heartbeat"])
    console.print_json(json.dumps(record))


def graph(fmt: GraphFormat = typer.Option(GraphFormat.json, "--format")) -> None:
    """The dependency map: declared and observed edges between agents and tools."""
    print(render(dependency_graph(_agents()), fmt.value))


def task_as_of(
    where: Cluster, codec: MessageCodec, task_id: str, as_of_ms: int | None
) -> tuple[dict[str, Any] | None, int]:
    """A task's state as JSON, rebuilt from the log as of a time (None: now); and how many
    of its records were refused (`mesh state show`, the console's task view)."""
    agents = read_agents(where, codec.serde)
    keys = read_keys(where, codec.serde, mesh_anchor(where.settings))
    state, skipped = rebuild_task(where, codec, agents, keys, task_id, as_of_ms)
    return (None if state is None else task_record(state)), skipped


@state_app.command("show")
def show_state(
    task_id: str,
    as_of: str | None = typer.Option(None, "--as-of", help="ISO-8601 time or epoch ms."),
) -> None:
    """A task's state rebuilt from the log (as it was at --as-of, if given)."""
    as_of_ms = parse_time(as_of, "--as-of") if as_of else None
    current = settings()
    where = cluster(current)
    registry = open_registry(current, where)
    try:
        codec = MessageCodec(Serde(registry), PublicKeys(), max_bytes=current.max_message_bytes)
        state, skipped = task_as_of(where, codec, task_id, as_of_ms)
    finally:
        registry.close()
    if state is None:
        note = f" ({skipped} refused events skipped)" if skipped else ""
        console.print(
            f"no events for task {task_id!r}" + (f" up to {as_of}" if as_of else "") + note
        )
        raise typer.Exit(1)
    console.print_json(json.dumps(state))
    if skipped:
        console.print(f"({skipped} refused events skipped, as the processor refused them)")


def _iso(ms: int | None) -> str | None:
    """ISO 8601 in UTC (what --json prints for every time)."""
    if ms is None:
        return None
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
