"""What the sidecar knows about halts, and whether it may trust what it knows. Pure: no client,
no clock of its own (every check takes ``now``).

:class:`ControlView` folds the control topic (through :class:`~mesh.domain.control.HaltBook`)
and tracks the follower's health. The sidecar **fails closed**: an agent may act only while
the sidecar can show it has read the control topic recently. It refuses sends and tool calls
with :class:`~mesh.errors.ControlUnavailableError` when

* it has not caught up with the control topic yet (start-up);
* the follower has stopped (its task died; the supervisor restarts it);
* the follower has not confirmed it is at the control topic's end for longer than
  ``stale_after_s`` (the broker is unreachable, or the follower is stuck).

The bound (``MESH_CONTROL_STALE_MS``, default 5 s) is the longest an agent can go on acting
on halts it may not have seen: a halt issued while the sidecar is cut off from the broker is
obeyed at the latest this long after the cut. The follower confirms its position every
``stale_after_s / 5``, so a healthy sidecar never comes near the bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.domain.control import HaltBook
from mesh.errors import ControlUnavailableError, HaltedError

__all__ = ["ControlView", "HaltChange"]


@dataclass(frozen=True, slots=True)
class HaltChange:
    """The halt in force changed: ``halt`` is the new one (None: resumed), ``lifted`` the one
    it replaces (None: the agent was running)."""

    halt: dict[str, Any] | None
    lifted: dict[str, Any] | None = None


class ControlView:
    def __init__(self, agent_id: str, stale_after_s: float) -> None:
        self.agent_id = agent_id
        self.stale_after_s = stale_after_s
        self.book = HaltBook()
        self.applied: dict[str, Any] | None = None
        self.following = False
        self.confirmed_at: float | None = None  # when the follower last stood at the end
        self.lost = 0  # times control was lost (follower died or went stale)

    # -- the follower reports --------------------------------------------------------------

    def fold(self, key: str, record: Mapping[str, Any] | None, signer: str = "") -> str | None:
        """One control command verified as ``signer``'s (or a tombstone); returns why it
        changed nothing, if it did not (ordered control: see mesh.domain.control)."""
        return self.book.apply(key, record, signer).stale

    def confirmed(self, now: float) -> None:
        """The follower stands at the end of every control partition as of ``now``."""
        self.following = True
        self.confirmed_at = now

    def follower_stopped(self) -> None:
        if self.following:
            self.lost += 1
        self.following = False

    # -- decisions -------------------------------------------------------------------------

    def change(self, capabilities: Iterable[str]) -> HaltChange | None:
        """The halt in force for this agent, if it differs from the one applied (then it is
        applied: the caller acknowledges it)."""
        halt = self.book.halt_for(self.agent_id, capabilities)
        if halt == self.applied:
            return None
        lifted, self.applied = self.applied, halt
        return HaltChange(halt, lifted)

    def unavailable(self, now: float) -> str | None:
        """Why control cannot be trusted as of ``now`` (None: it can)."""
        if self.confirmed_at is None:
            return "it has not caught up with the control topic yet"
        if not self.following:
            return "its follower of the control topic has stopped (it is being restarted)"
        silent = now - self.confirmed_at
        if silent > self.stale_after_s:
            return (
                f"it has not been able to confirm it is up to date with the control topic for "
                f"{silent:.1f}s (bound {self.stale_after_s:.1f}s); is the broker reachable?"
            )
        return None

    def healthy(self, now: float) -> bool:
        return self.unavailable(now) is None

    def check(self, now: float) -> None:
        """Raise unless the agent may act: control is followed and no halt is in force."""
        why = self.unavailable(now)
        if why is not None:
            raise ControlUnavailableError(
                f"agent {self.agent_id!r} may not act: its sidecar cannot tell whether it is "
                f"halted, because {why}. Nothing was sent; retry once /v1/health is healthy"
            )
        halt = self.applied
        if halt is not None:
            raise HaltedError(
                f"agent {self.agent_id!r} is halted by {halt['rule']}: {halt['reason']} "
                f"(requested by {halt['requested_by']}); nothing was sent. An operator lifts "
                "it with `mesh resume`"
            )
