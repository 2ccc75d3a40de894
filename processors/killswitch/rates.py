"""Fleet-wide rate limits per kind of action: throttle first, halt if it keeps climbing (pure).

AISVS C9.8.5 asks for swarm-level aggregate rate limits, so that a burst across many agents
cannot flood an external system. The kill-switch's second stage counts every action of a rated
kind (``[rates]`` in its policy: ``TOOL_CALL``, ``MODEL_CALL``, ``MESSAGE_SENT``) across the
fleet, fed under the key ``rate:KIND`` to the instance that owns it, in a sliding window:

* over the limit, that kind is **throttled** for ``throttle_s``: a ``Throttle`` record on
  ``mesh.throttles.v1`` (signed with the mesh's key) that every sidecar follows and obeys by
  refusing that kind with ``throttled`` and a retry time. Agents slow down; nothing stops.
  While the rate stays over, the throttle is renewed before it lapses.
* over ``halt_factor`` times the limit (the burst goes on despite the throttle: agents that
  ignore it, or go around their sidecars), the **fleet is halted** (rule ``fleet_rate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from mesh.domain.windows import SlidingWindow
from processors.killswitch.policy import RateLimits
from processors.killswitch.watch import Firing

__all__ = ["RateWatch", "Throttle"]


class Throttle(NamedTuple):
    kind: str
    until_ms: int
    observed: int
    limit: int
    window_s: float
    reason: str
    evidence: tuple[str, ...]

    def to_record(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "until": self.until_ms,
            "observed": self.observed,
            "limit": self.limit,
            "window_s": self.window_s,
            "reason": self.reason,
            "evidence": list(self.evidence[-20:]),
        }


@dataclass
class _Kind:
    window: SlidingWindow
    throttled_until_ms: int = 0


class RateWatch:
    def __init__(self, rates: RateLimits) -> None:
        self.rates = rates
        self._kinds: dict[str, _Kind] = {}

    def rated(self, kind: str) -> bool:
        return kind in self.rates.limits

    def observe(self, kind: str, at_ms: int, event_id: str) -> Throttle | Firing | None:
        """Count one action; a throttle to publish, a fleet halt, or nothing."""
        limit = self.rates.limits.get(kind)
        if limit is None:
            return None
        state = self._kinds.get(kind)
        if state is None:
            state = self._kinds[kind] = _Kind(SlidingWindow(int(self.rates.window_s * 1000)))
        count = int(state.window.add(at_ms, 1, event_id))
        window = self.rates.window_s
        if count > limit * self.rates.halt_factor:
            return Firing(
                "fleet_rate",
                "*",
                f"the fleet took {count} {kind} actions in {window:g}s despite the throttle at "
                f"{limit}: over {self.rates.halt_factor:g} times its limit",
                state.window.evidence()[-50:],
            )
        renew_ms = int(self.rates.throttle_s * 500)  # renewed half-way to its lapse
        if count > limit and at_ms >= state.throttled_until_ms - renew_ms:
            state.throttled_until_ms = at_ms + int(self.rates.throttle_s * 1000)
            return Throttle(
                kind,
                state.throttled_until_ms,
                count,
                limit,
                window,
                f"the fleet took {count} {kind} actions in {window:g}s, over its limit of "
                f"{limit}: {kind} is throttled for {self.rates.throttle_s:g}s",
                state.window.evidence(),
            )
        return None

    def reset(self) -> None:
        """Fresh windows (a fleet resume)."""
        self._kinds.clear()
