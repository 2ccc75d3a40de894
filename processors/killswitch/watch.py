"""Sliding windows over telemetry and the rules that fire on them (pure: no clock, no I/O).

Time is the event's own time (its record timestamp), so a replay gives the same decisions and
tests drive it with a manual clock. The windows are the one mutable structure here, like a
Kafka Streams window store; everything they return is a frozen value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mesh.domain.telemetry import Kind
from mesh.domain.windows import SlidingWindow
from processors.killswitch.policy import Policy

__all__ = ["Firing", "Observation", "Watch"]


class Observation(NamedTuple):
    event_id: str
    agent_id: str
    at_ms: int
    kind: str  # TOOL_CALL, MODEL_CALL, MESSAGE_SENT, ERROR, ...
    name: str
    cost_usd: float = 0.0
    ok: bool = True
    peer: str | None = None
    arguments_digest: str | None = None
    hop_count: int = 0
    correlation_id: str = ""
    rule: str | None = None  # SEND_REFUSED: the rule that refused


#: Refusals that say nothing about the agent's intent: the mesh or an operator stopped it.
NOT_THE_AGENTS = frozenset(
    {"halted", "control_unavailable", "chain_halted", "no_policy", "throttled"}
)


class Firing(NamedTuple):
    rule: str
    agent_id: str  # '*' for a fleet rule
    reason: str
    evidence: tuple[str, ...]


@dataclass
class _AgentWindows:
    minute: SlidingWindow
    hour: SlidingWindow
    errors: SlidingWindow
    refusals: SlidingWindow
    repeats: dict[tuple[str, str], SlidingWindow] = field(default_factory=dict)
    hops: dict[tuple[str, str], SlidingWindow] = field(default_factory=dict)
    seen: int = 0

    def prune(self, now_ms: int) -> None:
        """Drop the windows that slid empty: one per (tool, arguments) and per (peer,
        correlation) would otherwise be kept for every call and every conversation ever seen
        (the soak found the kill-switch growing by one window per message this way)."""
        for windows in (self.repeats, self.hops):
            for key in [k for k, window in windows.items() if not window.slide(now_ms)]:
                if not windows[key].events:
                    del windows[key]


#: An agent's windows are swept of empty ones every this many of its observations.
_PRUNE_EVERY = 256


_MINUTE, _HOUR = 60_000, 3_600_000


class Watch:
    """Feed observations in time order per agent; get back at most one firing for each."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._agents: dict[str, _AgentWindows] = {}
        fleet = policy.fleet
        self._fleet = (
            SlidingWindow(_MINUTE),
            SlidingWindow(_HOUR),
            SlidingWindow(int(fleet.error_window_s * 1000)),
        )

    def reset(self, agent_ids: Iterable[str]) -> None:
        """Fresh windows (after a resume), so old evidence cannot re-fire at once."""
        for agent_id in agent_ids:
            self._agents.pop(agent_id, None)

    def reset_fleet(self) -> None:
        self._agents.clear()
        fleet = self.policy.fleet
        self._fleet = (
            SlidingWindow(_MINUTE),
            SlidingWindow(_HOUR),
            SlidingWindow(int(fleet.error_window_s * 1000)),
        )

    def observe(self, obs: Observation) -> list[Firing]:
        """The rules ``obs`` makes fire: the agent's first (in policy order), then the fleet's."""
        return [f for f in (self.observe_agent(obs), self.observe_fleet(obs)) if f is not None]

    def windows_held(self) -> int:
        """How many per-call and per-conversation windows are held (bounded by activity in
        the last ``repeat_window_s``, not by history)."""
        return sum(len(w.repeats) + len(w.hops) for w in self._agents.values())

    def observe_agent(self, obs: Observation) -> Firing | None:
        """The agent's own rule ``obs`` makes fire, if any (the first in policy order)."""
        return self._agent_rule(obs)

    def observe_fleet(self, obs: Observation) -> Firing | None:
        """The fleet rule ``obs`` makes fire, if any (fed every agent's spend and errors)."""
        return self._fleet_rule(obs)

    def _windows(self, agent_id: str) -> _AgentWindows:
        found = self._agents.get(agent_id)
        if found is None:
            limits = self.policy.limits(agent_id)
            found = _AgentWindows(
                SlidingWindow(_MINUTE),
                SlidingWindow(_HOUR),
                SlidingWindow(int(limits.error_window_s * 1000)),
                SlidingWindow(int(limits.refusal_window_s * 1000)),
            )
            self._agents[agent_id] = found
        return found

    def _agent_rule(self, obs: Observation) -> Firing | None:
        limits = self.policy.limits(obs.agent_id)
        w = self._windows(obs.agent_id)
        w.seen += 1
        if w.seen % _PRUNE_EVERY == 0:
            w.prune(obs.at_ms)
        who = obs.agent_id
        if obs.cost_usd:
            per_minute = w.minute.add(obs.at_ms, obs.cost_usd, obs.event_id)
            per_hour = w.hour.add(obs.at_ms, obs.cost_usd, obs.event_id)
            if per_minute > limits.max_cost_per_minute:
                return Firing(
                    "spend_per_minute",
                    who,
                    f"spent ${per_minute:.4f} in the last minute, over the budget of "
                    f"${limits.max_cost_per_minute:.4f}",
                    w.minute.evidence(),
                )
            if per_hour > limits.max_cost_per_hour:
                return Firing(
                    "spend_per_hour",
                    who,
                    f"spent ${per_hour:.4f} in the last hour, over the budget of "
                    f"${limits.max_cost_per_hour:.4f}",
                    w.hour.evidence(),
                )
        if obs.kind == Kind.TOOL_CALL:
            allowed = limits.allowed_tools
            if allowed is not None and obs.name not in allowed:
                return Firing(
                    "tool_not_allowed",
                    who,
                    f"called tool {obs.name!r}, which its policy does not allow "
                    f"(allowed: {', '.join(sorted(allowed)) or 'none'})",
                    (obs.event_id,),
                )
            call = (obs.name, obs.arguments_digest or "")
            window = w.repeats.setdefault(call, SlidingWindow(int(limits.repeat_window_s * 1000)))
            count = window.add(obs.at_ms, 1, obs.event_id)
            if count > limits.max_repeated_tool_calls:
                return Firing(
                    "repeated_tool_call",
                    who,
                    f"called {obs.name!r} with the same arguments {int(count)} times in "
                    f"{limits.repeat_window_s:g}s (at most {limits.max_repeated_tool_calls})",
                    window.evidence(),
                )
        if obs.kind == Kind.MESSAGE_SENT and obs.peer:
            if obs.hop_count > limits.max_hop_count:
                return Firing(
                    "hop_limit",
                    who,
                    f"sent a message at hop {obs.hop_count}, over the limit of "
                    f"{limits.max_hop_count}",
                    (obs.event_id,),
                )
            edge = (obs.peer, obs.correlation_id)
            window = w.hops.setdefault(edge, SlidingWindow(int(limits.repeat_window_s * 1000)))
            count = window.add(obs.at_ms, 1, obs.event_id)
            if count > limits.max_cycle_repeats:
                return Firing(
                    "causation_cycle",
                    who,
                    f"sent to {obs.peer!r} {int(count)} times within one request "
                    f"(correlation {obs.correlation_id!r}): a loop (at most "
                    f"{limits.max_cycle_repeats})",
                    window.evidence(),
                )
        if obs.kind == Kind.SEND_REFUSED:
            return self._refusal(obs, w, limits)
        if obs.kind == Kind.ERROR or not obs.ok:
            errors = w.errors.add(obs.at_ms, 1, obs.event_id)
            if errors > limits.max_errors:
                return Firing(
                    "error_storm",
                    who,
                    f"{int(errors)} errors in {limits.error_window_s:g}s (at most "
                    f"{limits.max_errors})",
                    w.errors.evidence(),
                )
        return None

    def _refusal(self, obs: Observation, w: _AgentWindows, limits: Any) -> Firing | None:
        """Containment: an agent that keeps trying what its policy forbids is halted."""
        if obs.rule in NOT_THE_AGENTS:
            return None
        count = w.refusals.add(obs.at_ms, 1, obs.event_id)
        if count > limits.max_refusals:
            return Firing(
                "refusal_storm",
                obs.agent_id,
                f"{int(count)} policy refusals in {limits.refusal_window_s:g}s (at most "
                f"{limits.max_refusals}; the last: {obs.rule or 'unknown'}): it keeps trying "
                "what its policy forbids",
                w.refusals.evidence(),
            )
        return None

    def _fleet_rule(self, obs: Observation) -> Firing | None:
        fleet = self.policy.fleet
        minute, hour, errors = self._fleet
        if obs.cost_usd:
            per_minute = minute.add(obs.at_ms, obs.cost_usd, obs.event_id)
            per_hour = hour.add(obs.at_ms, obs.cost_usd, obs.event_id)
            if per_minute > fleet.max_cost_per_minute:
                return Firing(
                    "fleet_spend_per_minute",
                    "*",
                    f"the fleet spent ${per_minute:.4f} in the last minute, over the budget of "
                    f"${fleet.max_cost_per_minute:.4f}",
                    minute.evidence()[-50:],
                )
            if per_hour > fleet.max_cost_per_hour:
                return Firing(
                    "fleet_spend_per_hour",
                    "*",
                    f"the fleet spent ${per_hour:.4f} in the last hour, over the budget of "
                    f"${fleet.max_cost_per_hour:.4f}",
                    hour.evidence()[-50:],
                )
        if obs.kind == Kind.ERROR or not obs.ok:
            count = errors.add(obs.at_ms, 1, obs.event_id)
            if count > fleet.max_errors:
                return Firing(
                    "fleet_error_storm",
                    "*",
                    f"the fleet had {int(count)} errors in {fleet.error_window_s:g}s (at most "
                    f"{fleet.max_errors})",
                    errors.evidence()[-50:],
                )
        return None
