"""The registry as seen whole: every agent's current record, and the keys to verify them by."""

from __future__ import annotations

from mesh.adapters.kafka.table import Table
from mesh.adapters.serde.codec import Serde
from mesh.domain.agent_record import from_record
from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.topics import REGISTRY
from mesh.errors import UnknownSenderError
from mesh.settings import Settings

__all__ = ["RegistryKeys", "read_agents"]


def read_agents(settings: Settings, bootstrap: str, serde: Serde) -> dict[str, AgentState]:
    """Every agent's current record from ``mesh.registry.v1``."""
    table = Table(settings, bootstrap, f"{settings.topic_prefix}{REGISTRY}")
    try:
        table.catch_up()
        return _decode(table, serde)
    finally:
        table.close()


class RegistryKeys:
    """A KeyResolver over the registry's output. An unknown sender triggers one catch-up read
    before it is refused, so an agent registered a moment ago is found."""

    def __init__(self, settings: Settings, bootstrap: str, serde: Serde) -> None:
        self._serde = serde
        self._table = Table(settings, bootstrap, f"{settings.topic_prefix}{REGISTRY}")
        self._keys: dict[str, bytes] = {}

    def public_key(self, agent_id: str) -> bytes:
        if agent_id not in self._keys:
            self._table.catch_up()
            self._keys = {
                a.agent_id: a.public_key
                for a in _decode(self._table, self._serde).values()
                if a.status is not AgentStatus.RETIRED
            }
        try:
            return self._keys[agent_id]
        except KeyError:
            raise UnknownSenderError(
                f"sender {agent_id!r} is not a registered (and unretired) agent; it must "
                "register before it writes task events"
            ) from None

    def close(self) -> None:
        self._table.close()


def _decode(table: Table, serde: Serde) -> dict[str, AgentState]:
    return {
        key.decode(): from_record(serde.decode(value).record) for key, value in table.values.items()
    }
