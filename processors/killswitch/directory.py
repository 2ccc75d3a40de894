"""Who a halt reaches: dependants and capabilities from the registry's current records."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Protocol

from mesh.serde.codec import Serde
from mesh.settings import Settings
from processors.registry.state import AgentState, AgentStatus
from processors.registry.view import read_agents

__all__ = ["Directory", "RegistryDirectory", "StaticDirectory", "capabilities", "dependants"]


class Directory(Protocol):
    def agents(self) -> Mapping[str, AgentState]: ...


def dependants(agents: Mapping[str, AgentState], agent_id: str) -> list[str]:
    """Every agent that depends on ``agent_id``, directly or through others (declared or seen)."""
    found: list[str] = []
    frontier = [agent_id]
    while frontier:
        target = frontier.pop()
        for other in sorted(agents.values(), key=lambda a: a.agent_id):
            uses = (*other.depends_on_agents, *other.observed_agents)
            if target in uses and other.agent_id not in found and other.agent_id != agent_id:
                found.append(other.agent_id)
                frontier.append(other.agent_id)
    return found


def capabilities(agent: AgentState | None) -> list[str]:
    """The skill ids of an agent's A2A Agent Card."""
    if agent is None:
        return []
    try:
        card = json.loads(agent.agent_card_json)
    except ValueError:
        return []
    skills = card.get("skills", []) if isinstance(card, dict) else []
    return [str(s["id"]) for s in skills if isinstance(s, dict) and "id" in s]


def with_capability(agents: Mapping[str, AgentState], capability: str) -> list[str]:
    return sorted(
        a.agent_id
        for a in agents.values()
        if a.status is not AgentStatus.RETIRED and capability in capabilities(a)
    )


class StaticDirectory:
    def __init__(self, agents: Mapping[str, AgentState] | None = None) -> None:
        self._agents = dict(agents or {})

    def agents(self) -> Mapping[str, AgentState]:
        return self._agents


class RegistryDirectory:
    """The registry's records, re-read when older than ``max_age_s`` (only when a halt needs
    them, so the hot path never waits on it)."""

    def __init__(self, settings: Settings, bootstrap: str, serde: Serde, max_age_s: float = 2.0):
        self._settings, self._bootstrap, self._serde = settings, bootstrap, serde
        self._max_age_s = max_age_s
        self._agents: dict[str, AgentState] = {}
        self._read_at = float("-inf")

    def agents(self) -> Mapping[str, AgentState]:
        if time.monotonic() - self._read_at > self._max_age_s:
            self._agents = read_agents(self._settings, self._bootstrap, self._serde)
            self._read_at = time.monotonic()
        return self._agents
