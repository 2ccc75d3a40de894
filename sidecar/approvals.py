"""The sidecar's half of human approvals (mesh.domain.approvals): ask, wait, use once.

A permit for a tool the policy marks ``requires_approval`` is granted only against an
operator's approval of that exact call (agent, tool, arguments digest, chain). The first ask
publishes a ``REQUESTED`` step with the complete canonical arguments and raises
``approval_required`` naming the request (or waits up to ``wait_s`` for the decision); asking
again for the same call finds the same request. An approval is used once: its ``USED`` step
is written before the permit is granted, and folded at once so it cannot be used twice even
before it is read back. A rejected or expired request is refused with the reason.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from mesh.domain.approvals import (
    APPROVAL_SUBJECT,
    ESCALATION,
    ApprovalBook,
    ApprovalKind,
    Request,
    may_decide,
)
from mesh.domain.envelope import Envelope
from mesh.domain.topics import APPROVALS
from mesh.errors import PolicyViolationError
from sidecar.outbox import Outbox
from sidecar.permits import arguments_digest

__all__ = ["Approvals"]

#: How long a request waits for a decision before it lapses.
REQUEST_TTL_S = 3600.0


class _Waiter(Protocol):
    async def wait_changed(self, timeout_s: float) -> None: ...


class Approvals:
    def __init__(self, agent_id: str, book: ApprovalBook, outbox: Outbox, waiter: _Waiter) -> None:
        self.agent_id, self.book, self.outbox, self.waiter = agent_id, book, outbox, waiter

    async def approved(
        self,
        tool: str,
        arguments: Any,
        digest: str,
        cost_usd: float,
        cause: Envelope | None,
        policy_hash: str | None,
        wait_s: float,
        approvers: frozenset[str] | None = None,
    ) -> Request:
        """The approval of this call by an operator the policy lets approve it (``approvers``;
        None: any), now used; PolicyViolationError otherwise."""
        correlation = None if cause is None else cause.correlation_id
        now_ms = _now_ms()
        ask = (tool, arguments, digest, cost_usd, correlation, policy_hash)
        held = self.book.open_request(self.agent_id, tool, digest, correlation, now_ms, approvers)
        if held is None:
            newest = self.book.open_request(self.agent_id, tool, digest, correlation, now_ms)
            if newest is not None and newest.decision is not None:  # by somebody else
                await self._not_allowed(newest, approvers, ask)
        request_id = held.request_id if held else await self._ask(*ask)
        deadline = time.monotonic() + wait_s
        while True:
            found = self.book.requests.get(request_id)
            state = "pending" if found is None else found.state(_now_ms())
            if found is not None and found.decision and not may_decide(found.decided_by, approvers):
                await self._not_allowed(found, approvers, ask)
            if found is not None and state == "approved":
                await self._use(found)
                return found
            if state in ("rejected", "expired"):
                raise PolicyViolationError(
                    f"approval_{state}",
                    f"the call of {tool!r} was {state} (request {request_id}"
                    + (f", by {found.decided_by}: {found.note}" if found and found.note else "")
                    + "); ask again with other arguments, or have an operator review it",
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise PolicyViolationError(
                    "approval_required",
                    f"tool {tool!r} needs an operator's approval of this exact call: request "
                    f"{request_id} waits (`mesh approvals show {request_id}`, then `mesh "
                    f"approvals approve {request_id}`); ask for the permit again once approved",
                )
            await self.waiter.wait_changed(left)

    async def escalate(
        self,
        arguments: dict[str, Any],
        cause: Envelope | None,
        wait_s: float,
        parked: Callable[[str], Awaitable[None]],
    ) -> Request:
        """Ask a person (an operator) to decide on a task (``arguments``: the task, the reason,
        the details); ``parked(request_id)`` is awaited once the request is new. Return the
        request once decided, approved (used at once) or rejected.
        PolicyViolationError ``escalation_pending`` when ``wait_s`` passes undecided (the
        request waits on: asking again with the same arguments finds it)."""
        digest = arguments_digest(arguments)
        correlation = None if cause is None else cause.correlation_id
        held = self.book.open_request(self.agent_id, ESCALATION, digest, correlation, _now_ms())
        if held is None:
            ask = (ESCALATION, arguments, digest, 0.0, correlation, None)
            request_id = await self._ask(*ask)
            await parked(request_id)
        else:
            request_id = held.request_id
        deadline = time.monotonic() + wait_s
        while True:
            found = self.book.requests.get(request_id)
            state = "pending" if found is None else found.state(_now_ms())
            if found is not None and state == "approved":
                await self._use(found)
                return found
            if found is not None and state == "rejected":
                return found
            if state == "expired":
                raise PolicyViolationError(
                    "escalation_expired",
                    f"escalation {request_id} lapsed undecided; escalate again",
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise PolicyViolationError(
                    "escalation_pending",
                    f"escalation {request_id} waits for a person (`mesh escalations show "
                    f"{request_id}`, then `mesh escalations approve|reject {request_id}`)",
                )
            await self.waiter.wait_changed(left)

    async def _not_allowed(
        self, decided: Request, approvers: frozenset[str] | None, ask: tuple[Any, ...]
    ) -> None:
        """A decision by an operator the policy does not let decide this tool counts for
        nothing: the call is asked for again, and the agent told why and which request
        waits now (PolicyViolationError ``approver_not_allowed``)."""
        request_id = await self._ask(*ask)
        allowed = ", ".join(sorted(approvers or ()))
        raise PolicyViolationError(
            "approver_not_allowed",
            f"the call of {decided.tool!r} was {str(decided.decision).lower()} by "
            f"{decided.decided_by!r}, who may not decide it under the policy (approvers: "
            f"{allowed}; request {decided.request_id}); request {request_id} waits for one of "
            "them",
        )

    async def _ask(
        self,
        tool: str,
        arguments: Any,
        digest: str,
        cost_usd: float,
        correlation: str | None,
        policy_hash: str | None,
    ) -> str:
        request_id = str(uuid.uuid4())
        body = self._step(ApprovalKind.REQUESTED, request_id, tool, digest, correlation)
        body |= {
            "arguments_json": orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode(),
            "cost_usd": cost_usd,
            "expires_at": _now_ms() + int(REQUEST_TTL_S * 1000),
            "policy_hash": policy_hash,
        }
        await self._write(request_id, body)
        self.book.apply(body, self.agent_id, (), _now_ms())  # known at once, before read back
        return request_id

    async def _use(self, request: Request) -> None:
        body = self._step(
            ApprovalKind.USED,
            request.request_id,
            request.tool,
            request.arguments_digest,
            request.correlation_id,
        )
        await self._write(request.request_id, body)
        self.book.apply(body, self.agent_id, (), _now_ms())  # used: never twice

    def _step(
        self,
        kind: ApprovalKind,
        request_id: str,
        tool: str,
        digest: str,
        correlation: str | None,
    ) -> dict[str, Any]:
        return {
            "kind": kind.value,
            "request_id": request_id,
            "agent_id": self.agent_id,
            "tool": tool,
            "arguments_json": None,
            "arguments_digest": digest,
            "cost_usd": 0.0,
            "correlation_id": correlation,
            "expires_at": _now_ms(),
            "actor": self.agent_id,
            "note": None,
            "policy_hash": None,
        }

    async def _write(self, request_id: str, body: dict[str, Any]) -> None:
        record = self.outbox.event(APPROVALS, APPROVAL_SUBJECT, body, key=request_id)
        await self.outbox.write(record)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
