"""Global tables the runtime owns and hands to processors read-only (Kafka Streams' GlobalKTable).

Three: the agent registry (``mesh.registry.v1``: identities, capabilities, the dependency
map) as ``ctx.agents``; the key directory (``mesh.keys.v1``, countersigned by the mesh), from
which ``ctx.agents.public_key`` answers, never from the registry's records; and the halts in
force (the control topic folded as every reader folds it) as ``ctx.halts``. The engine reads
them to their end before the first batch and then folds what has arrived *between* batches
(:meth:`Tables.refresh`, non-blocking), so a processor's ``process()`` never reads Kafka: it
asks ``ctx.agents``.

An agent that registered a moment ago may not be in the table yet when its first event
arrives. The view then raises :class:`~mesh.errors.TableBehindError`; the runtime (not the
processor) reads the table to its end and handles the record once more, with a view that
raises a plain UnknownSenderError on a second miss, so the record is dead-lettered. One read
per miss, as before the runtime owned the table, but never inside ``process()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from mesh.domain.agents import AgentState, registered_key
from mesh.domain.control import halt_in_force
from mesh.domain.keys import KeyDirectory, KeyStatement
from mesh.errors import RevokedKeyError, TableBehindError, UnknownSenderError

__all__ = ["AgentsView", "HaltsView", "StaticTables", "Tables"]


class _Source(Protocol):
    values: dict[str, AgentState]

    def catch_up(self) -> int: ...

    def poll(self, max_records: int = 1000) -> int: ...

    def close(self) -> None: ...


class _HaltSource(Protocol):
    @property
    def halts(self) -> Mapping[str, Mapping[str, Any]]: ...

    def catch_up(self) -> int: ...

    def poll(self, max_records: int = 1000) -> int: ...

    def close(self) -> None: ...


class _KeySource(Protocol):
    directory: KeyDirectory

    def catch_up(self) -> int: ...

    def poll(self, max_records: int = 1000) -> int: ...

    def close(self) -> None: ...


class HaltsView:
    """Read-only: the halts in force, and which one stops an agent."""

    def __init__(self, halts: Mapping[str, Mapping[str, Any]]) -> None:
        self._halts = halts

    def halt_for(self, agent_id: str, capabilities: Iterable[str] = ()) -> dict[str, Any] | None:
        return halt_in_force(self._halts, agent_id, capabilities)


class AgentsView(Mapping[str, AgentState]):
    """Read-only: every agent's current record, and the key each one signs with."""

    def __init__(
        self,
        agents: Mapping[str, AgentState],
        may_be_behind: bool,
        keys: KeyDirectory | None = None,
    ) -> None:
        self._agents = agents
        self._may_be_behind = may_be_behind
        self._keys = keys

    def __getitem__(self, agent_id: str) -> AgentState:
        return self._agents[agent_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def vouched(self, agent_id: str) -> KeyStatement | None:
        """The mesh's key statement in force for ``agent_id`` (None: none, or no directory)."""
        return None if self._keys is None else self._keys.get(agent_id)

    def public_key(self, agent_id: str) -> bytes:
        """The key the mesh vouches for (raise UnknownSenderError if none; RevokedKeyError if
        revoked). Without a directory (the test driver's fixed tables), the registered key."""
        try:
            if self._keys is not None:
                return self._keys.key_for(agent_id)
            return registered_key(self._agents, agent_id)
        except RevokedKeyError:
            raise
        except UnknownSenderError as exc:
            if self._may_be_behind:
                raise TableBehindError(str(exc)) from None
            raise


class Tables:
    """The runtime's global tables over Kafka (one reader per engine: engines run in threads).

    The reader is opened by the first :meth:`catch_up` and closed by :meth:`close`, so an
    engine that is started again after a failure reads the table afresh."""

    def __init__(
        self,
        open_agents: Callable[[], _Source] | None = None,
        open_halts: Callable[[], _HaltSource] | None = None,
        open_keys: Callable[[], _KeySource] | None = None,
    ) -> None:
        self._open_agents, self._open_halts = open_agents, open_halts
        self._open_keys = open_keys
        self._agents: _Source | None = None
        self._halts: _HaltSource | None = None
        self._keys: _KeySource | None = None

    def _sources(self) -> list[_Source | _HaltSource | _KeySource]:
        return [s for s in (self._agents, self._halts, self._keys) if s is not None]

    def catch_up(self) -> None:
        if self._agents is None and self._open_agents is not None:
            self._agents = self._open_agents()
        if self._halts is None and self._open_halts is not None:
            self._halts = self._open_halts()
        if self._keys is None and self._open_keys is not None:
            self._keys = self._open_keys()
        for source in self._sources():
            source.catch_up()

    def refresh(self) -> None:
        for source in self._sources():
            source.poll()

    def view(self, may_be_behind: bool = True) -> AgentsView:
        agents = self._agents.values if self._agents else {}
        keys = self._keys.directory if self._keys else None
        return AgentsView(agents, may_be_behind, keys)

    def halts_view(self) -> HaltsView:
        return HaltsView(self._halts.halts if self._halts else {})

    def close(self) -> None:
        for source in self._sources():
            source.close()
        self._agents = self._halts = self._keys = None


class StaticTables(Tables):
    """Fixed tables (the test driver, and jobs that read none): never behind, never read."""

    def __init__(
        self,
        agents: Mapping[str, AgentState] | None = None,
        halts: Mapping[str, Mapping[str, Any]] | None = None,
        keys: KeyDirectory | None = None,
    ) -> None:
        self.agents: dict[str, AgentState] = dict(agents or {})
        self.halts: dict[str, Mapping[str, Any]] = dict(halts or {})
        self.keys = keys

    def catch_up(self) -> None:
        return None

    def refresh(self) -> None:
        return None

    def view(self, may_be_behind: bool = True) -> AgentsView:
        return AgentsView(self.agents, False, self.keys)

    def halts_view(self) -> HaltsView:
        return HaltsView(self.halts)

    def close(self) -> None:
        return None
