"""The agent registry (``mesh.registry.v1``) read whole: every agent's current record."""

from __future__ import annotations

from mesh.adapters.kafka.table import Table
from mesh.adapters.serde.codec import Serde
from mesh.domain.agent_record import from_record
from mesh.domain.agents import AgentState
from mesh.domain.topics import REGISTRY
from mesh.settings import Cluster

__all__ = ["agent_table", "read_agents"]


def agent_table(cluster: Cluster, serde: Serde) -> Table[AgentState]:
    """A table of the registry's records, not yet read (``catch_up`` or ``poll`` it)."""
    return Table(
        cluster, cluster.topic(REGISTRY), lambda value: from_record(serde.decode(value).record)
    )


def read_agents(cluster: Cluster, serde: Serde) -> dict[str, AgentState]:
    """Every agent's current record, read to the end of ``mesh.registry.v1``."""
    return dict(agent_table(cluster, serde).read_once().values)
