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
from mesh.domain.approvals import Request
from mesh.domain.envelope import Envelope
from mesh.domain.topics import STATE, TASKS
from mesh.errors import ProcessorError
from mesh.settings import Cluster
from sidecar import facts
from sidecar.approvals import REQUEST_TTL_S
from sidecar.context import read_task_state
from sidecar.reports import Reports
from sidecar.tools import Cause

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
    #: The Sidecar's: the delivered message some work serves.
    _cause: Callable[[Cause], Envelope | None]
    reports: Reports

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
        workflow: str | None = None,
    ) -> None:
        """Record a step of a task (REQUESTED, ASSIGNED, HANDED_OFF, COMPLETED, ...);
        ``workflow`` (on REQUESTED) names the kind of task its KPIs are reported under."""
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
            workflow=workflow,
        )
        await self._write_event(TASKS, "mesh.tasks.TaskEvent", body, key=task_id)

    async def escalate(
        self,
        task_id: str,
        reason: str,
        *,
        details: Any = None,
        reply_to: Cause = None,
        wait_s: float = REQUEST_TTL_S,
    ) -> Request:
        """Hand a decision on the task to a person and wait for the answer (human in the
        loop). The task is parked (``ESCALATED``, shown by the state projections) and a request
        with the exact task, reason and details waits on ``mesh.approvals.v1`` for an operator
        (`mesh escalations approve|reject ID --note`, signed, single-use, expiring). The
        answer comes back as the request decided (``decision``, ``decided_by``, ``note``) and
        is recorded on the task (``ASSIGNED`` back to this agent, with the answer). Raises
        PolicyViolationError ``escalation_pending`` if nobody answered within ``wait_s``
        (escalating the same again waits for the same request)."""
        self.check_may_act()
        if self.reports.approvals is None:
            raise ProcessorError(f"the sidecar of {self.agent_id!r} is not started")
        cause = self._cause(reply_to)

        async def parked(request_id: str) -> None:
            summary = f"escalation {request_id}: {reason}"
            await self.task_event(task_id, "ESCALATED", target="person", summary=summary)

        arguments = {"task_id": task_id, "reason": reason, "details": details}
        answer = await self.reports.approvals.escalate(arguments, cause, wait_s, parked)
        verdict = "approved" if answer.decision == "APPROVED" else "rejected"
        summary = f"escalation {answer.request_id} {verdict} by {answer.decided_by}: {answer.note}"
        await self.task_event(task_id, "ASSIGNED", target=self.agent_id, summary=summary)
        return answer

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
