"""Tasks through the sidecar: the steps of a task and its shared context (a mixin of
:class:`sidecar.core.Sidecar`, so the facade keeps one surface).

Steps (``TaskEvent``) and context writes (``ContextWrite``) go to ``mesh.tasks.v1`` keyed by
the task, signed like everything the agent writes; the state processor folds them into the
projection that :meth:`TaskSteps.context` reads (``mesh.state.v1``). An agent that may not act
(halted, or its control view stale) can do neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mesh.adapters.serde.codec import Serde
from mesh.domain.topics import STATE, TASKS
from mesh.settings import Cluster
from sidecar import facts
from sidecar.context import read_task_state

__all__ = ["TaskSteps"]


class TaskSteps:
    """Task events, context writes and the context read back (mixed into the Sidecar)."""

    agent_id: str
    cluster: Cluster
    serde: Serde
    _partitions: dict[str, int]

    #: Governed's: fail closed unless control is current and no halt is in force.
    check_may_act: Callable[[], None]
    #: The Sidecar's: seal with the agent's key, write and wait.
    _write_event: Callable[..., Awaitable[None]]

    async def task_event(
        self,
        task_id: str,
        kind: str,
        *,
        target: str | None = None,
        capability: str | None = None,
        summary: str | None = None,
        artifact_uris: tuple[str, ...] = (),
        value_usd: float | None = None,
    ) -> None:
        """Record a step of a task (REQUESTED, ASSIGNED, HANDED_OFF, COMPLETED, ...)."""
        self.check_may_act()
        body = facts.task_event(
            self.agent_id,
            task_id,
            kind,
            target=target,
            capability=capability,
            summary=summary,
            artifact_uris=artifact_uris,
            value_usd=value_usd,
        )
        await self._write_event(TASKS, "mesh.tasks.TaskEvent", body, key=task_id)

    async def write_context(
        self, task_id: str, key: str, value: Any, expected_version: int = 0
    ) -> None:
        """Write one key of the task's shared context; ``expected_version`` is the version
        read (0: the key must be new). A stale write is refused by the state processor."""
        self.check_may_act()
        body = facts.context_write(task_id, key, value, expected_version)
        await self._write_event(TASKS, "mesh.tasks.ContextWrite", body, key=task_id)

    async def context(self, task_id: str) -> dict[str, Any] | None:
        """The task's shared context as the state projections hold it (None: unknown task)."""
        state = self.cluster.topic(STATE)
        partitions = self._partitions[state]
        return await read_task_state(self.cluster, self.serde, task_id, partitions)
