"""A sliding window over timed values with a running total: ``(now - span, now]``. Pure: the
caller passes the time (event time in the kill-switch, its own clock in the sidecar), so a
replay gives the same answers and tests drive it by hand.

The one mutable structure of the domain, like a Kafka Streams window store: the kill-switch
keeps its rule windows in it, the sidecar its spend budget.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """Values of the last ``span`` (the same unit as the times given), with their total."""

    __slots__ = ("events", "span", "total")

    def __init__(self, span: float) -> None:
        self.span = span
        self.events: deque[tuple[float, float, str]] = deque()
        self.total = 0.0

    def add(self, at: float, value: float, tag: str = "") -> float:
        """Record ``value`` at ``at``; returns the window's total after sliding to ``at``."""
        self.events.append((at, value, tag))
        self.total += value
        return self.slide(at)

    def slide(self, now: float) -> float:
        """Drop what is ``span`` or more before ``now``; returns the total."""
        while self.events and self.events[0][0] <= now - self.span:
            self.total -= self.events.popleft()[1]
        return self.total

    def evidence(self) -> tuple[str, ...]:
        """The tags of the values in the window, oldest first."""
        return tuple(tag for _, _, tag in self.events)
