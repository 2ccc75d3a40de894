"""The agent registry (``mesh.registry.v1``) read whole: every agent's current record."""

from __future__ import annotations

from mesh.adapters.kafka.table import Table
from mesh.adapters.serde.codec import Serde
from mesh.domain.agent_record import from_record
from mesh.domain.agents import AgentState
from mesh.domain.topics import REGISTRY
from mesh.settings import Settings

__all__ = ["agent_table", "read_agents"]


def agent_table(settings: Settings, bootstrap: str, serde: Serde) -> Table[AgentState]:
    """A table of the registry's records, not yet read (``catch_up`` or ``poll`` it)."""
    return Table(
        settings,
        bootstrap,
        f"{settings.topic_prefix}{REGISTRY}",
        lambda value: from_record(serde.decode(value).record),
    )


def read_agents(settings: Settings, bootstrap: str, serde: Serde) -> dict[str, AgentState]:
    """Every agent's current record, read to the end of ``mesh.registry.v1``."""
    table = agent_table(settings, bootstrap, serde)
    try:
        table.catch_up()
        return dict(table.values)
    finally:
        table.close()
