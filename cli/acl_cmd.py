"""`mesh acl apply|user`: let the broker itself refuse what no principal should do.

``apply`` writes the ACLs of ``mesh.domain.acls`` for the processors' principal, the operators
and every agent (the registry's, plus any named with ``--agent``); ``user`` sets a principal's
SCRAM-SHA-512 password. Both run as a principal allowed to alter ACLs and users.
"""

from __future__ import annotations

import typer

from cli.common import cluster, console, settings
from mesh.adapters.kafka.acls import apply_acls, set_user
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.domain.acls import plan_acls
from mesh.domain.control import is_mesh_process
from mesh.errors import MeshError

app = typer.Typer(help="Kafka ACLs and SCRAM users for the mesh's principals.")


@app.command()
def apply(
    processors: str = typer.Option(
        "mesh-processors", "--processors", help="The processors' principal (user name)."
    ),
    operator: list[str] = typer.Option(
        ["mesh-operator"], "--operator", help="An operator's principal (repeatable)."
    ),
    agent: list[str] = typer.Option(
        [], "--agent", help="An agent's id, also its principal (repeatable)."
    ),
    registry_agents: bool = typer.Option(
        True, "--registry-agents/--no-registry-agents", help="Also every agent registered."
    ),
) -> None:
    """Write every ACL the mesh needs (safe to run again)."""
    current = settings()
    where = cluster(current)
    agents = set(agent)
    if registry_agents:
        registry = open_registry(current, where)
        try:
            agents |= {a for a in read_agents(where, Serde(registry)) if not is_mesh_process(a)}
        except MeshError as exc:
            console.print(f"note: the registry could not be read ({exc}); only --agent ids")
        finally:
            registry.close()
    grants = plan_acls(current.topic_prefix, processors, operator, agents)
    sent = apply_acls(where, grants)
    console.print(
        f"{sent} ACLs written for the processors ({processors}), {len(operator)} operator(s) "
        f"and {len(agents)} agent(s)"
    )


@app.command()
def user(
    name: str = typer.Argument(..., help="The principal's user name (an agent's: its id)."),
    password: str = typer.Option(
        ..., "--password", prompt=True, hide_input=True, help="Its SCRAM password."
    ),
) -> None:
    """Create a principal, or change its password (SCRAM-SHA-512)."""
    set_user(cluster(settings()), name, password)
    console.print(f"user {name}: SCRAM-SHA-512 credential set")
