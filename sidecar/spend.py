"""An agent's spend in its policy's sliding window: what the sidecar admits, and what tool
permits hold until their calls report (``sidecar.permits``). Pure: every call takes ``now``."""

from __future__ import annotations

from mesh.domain.windows import SlidingWindow
from mesh.errors import PolicyViolationError
from sidecar.policy import AgentPolicy

__all__ = ["SpendWindow"]


class SpendWindow:
    """Spend in a sliding window ``(now - W, now]``; ``admit`` refuses what would go over."""

    def __init__(self, policy: AgentPolicy) -> None:
        self.policy = policy
        self._window = SlidingWindow(policy.budget_window_s)
        self.reserved = 0.0  # held by tool permits not yet reported (sidecar.permits)

    @property
    def total(self) -> float:
        return self._window.total

    def admit(self, cost_usd: float, now: float) -> None:
        """Record ``cost_usd`` at ``now``, or raise PolicyViolationError (recording nothing)."""
        self._check(cost_usd, now)
        if cost_usd:
            self._window.add(now, cost_usd)

    def reserve(self, cost_usd: float, now: float) -> None:
        """Hold ``cost_usd`` for a permitted call (refused like spending it)."""
        self._check(cost_usd, now)
        self.reserved += cost_usd

    def settle(self, reserved_usd: float, cost_usd: float, now: float) -> None:
        """A permitted call completed: its reservation becomes what it actually cost (recorded
        even over the budget: it was spent; the kill-switch sees it too)."""
        self.release(reserved_usd)
        self._window.slide(now)
        if cost_usd:
            self._window.add(now, cost_usd)

    def release(self, reserved_usd: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved_usd)

    def _check(self, cost_usd: float, now: float) -> None:
        budget = self.policy.budget_usd
        self._window.slide(now)
        held = self.total + self.reserved
        if budget is not None and held + cost_usd > budget + 1e-9:
            reserved = f" (${self.reserved:.4f} of it reserved by permits)" if self.reserved else ""
            raise PolicyViolationError(
                "budget_exceeded",
                f"spending ${cost_usd:.4f} would bring this agent to "
                f"${held + cost_usd:.4f}{reserved} in {self.policy.budget_window_s:g} s, over "
                f"its budget of ${budget:.2f}",
            )
