"""The registry's current records, as the kill-switch sees them when a halt needs its reach."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.serde.codec import Serde
from mesh.domain.agents import AgentState
from mesh.settings import Settings

__all__ = ["Directory", "RegistryDirectory", "StaticDirectory"]


class Directory(Protocol):
    def agents(self) -> Mapping[str, AgentState]: ...


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
