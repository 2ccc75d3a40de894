"""Tool calls and spend reports through the sidecar: the part of :class:`sidecar.core.Sidecar`
an agent calls around its tools and models (a mixin, so the facade keeps one surface).

A tool runs only under a permit asked for before the call (:mod:`sidecar.permits`); the
completion report quotes it. ``async with mesh.tool(...)`` does both around a block. The checks
and the telemetry are :class:`sidecar.reports.Reports`'; the chain a call serves comes from
``cause`` or, inside an SDK handler, the message being handled (``Sidecar._cause``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from mesh.domain.envelope import Envelope
from mesh.errors import AgentRefusedError
from sidecar.delivery import Delivery
from sidecar.permits import Permit
from sidecar.reports import Reports
from sidecar.telemetry import Kind

__all__ = ["Cause", "ToolCall", "ToolCalls"]

#: The delivered message some work serves: a Delivery, a delivered message id, or None.
Cause = Delivery | str | None


class ToolCall:
    """One permitted tool call in progress (``Sidecar.tool``): set ``cost_usd`` to what it
    actually cost (None: what the permit reserved)."""

    def __init__(self, permit: Permit) -> None:
        self.permit = permit
        self.cost_usd: float | None = None
        self.ok = True
        self.detail: str | None = None


class ToolCalls:
    """Permits, tool calls, model calls and errors (mixed into the Sidecar)."""

    reports: Reports
    #: The delivered message some work serves (the Sidecar's: named, or the one handled).
    _cause: Callable[[Cause], Envelope | None]

    async def permit_tool(
        self,
        tool: str,
        arguments: Any = None,
        *,
        cost_usd: float = 0.0,
        cause: Cause = None,
        wait_approval_s: float = 0.0,
    ) -> Permit:
        """A single-use permit to call ``tool`` with ``arguments``, granted before the call
        (:mod:`sidecar.permits`): the arguments fit the policy's constraints and ``cost_usd``
        (else the tool's ``max_cost_usd``) is reserved. A tool that ``requires_approval``
        also needs an operator's approval of this exact call (:mod:`sidecar.approvals`;
        ``wait_approval_s``: how long to wait for it). Raises PolicyViolationError if not."""
        try:
            envelope = self._cause(cause)
        except AgentRefusedError as exc:
            await self.reports.refused(tool, exc)
            raise
        return await self.reports.permit(tool, arguments, cost_usd, envelope, wait_approval_s)

    async def report_tool_call(
        self,
        tool: str,
        arguments: Any = None,
        *,
        permit: Permit | str | None = None,
        cost_usd: float | None = None,
        latency_ms: float = 0.0,
        ok: bool = True,
        detail: str | None = None,
    ) -> None:
        """Report a tool call made under ``permit`` (what it cost: ``cost_usd``, else what the
        permit reserved). Without a valid permit of its own the report is a violation: it is
        refused and reported (PolicyViolationError)."""
        permit_id = permit.permit_id if isinstance(permit, Permit) else permit
        await self.reports.tool_call(
            tool, arguments, permit_id, cost_usd=cost_usd, latency_ms=latency_ms, ok=ok,
            detail=detail,
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def tool(
        self,
        tool: str,
        arguments: Any = None,
        *,
        cost_usd: float = 0.0,
        cause: Cause = None,
        wait_approval_s: float = 0.0,
    ) -> AsyncIterator[ToolCall]:
        """Run one tool call under a permit::

            async with mesh.tool("search", {"q": query}, cost_usd=0.02) as call:
                result = await search(query)
                call.cost_usd = result.cost      # optional: what it actually cost

        The permit is asked for on entry (refused: the block never runs); on exit the call is
        reported with its latency, and as failed (with the exception) if the block raised."""
        permit = await self.permit_tool(
            tool, arguments, cost_usd=cost_usd, cause=cause, wait_approval_s=wait_approval_s
        )
        call = ToolCall(permit)
        started = time.monotonic()
        try:
            yield call
        except BaseException as exc:
            call.ok, call.detail = False, f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            latency = (time.monotonic() - started) * 1000
            await self.report_tool_call(
                tool, arguments, permit=permit, cost_usd=call.cost_usd, latency_ms=latency,
                ok=call.ok, detail=call.detail,
            )  # fmt: skip

    async def report_model_call(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        latency_ms: float = 0.0,
        cause: Cause = None,
    ) -> None:
        await self.reports.report(
            Kind.MODEL_CALL,
            model,
            cost_usd,
            self._cause(cause),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
        )

    async def report_error(self, name: str, detail: str, *, cause: Cause = None) -> None:
        await self.reports.report(
            Kind.ERROR, name, 0.0, self._cause(cause), ok=False, detail=detail
        )
