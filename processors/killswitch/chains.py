"""Budgets per chain: every record of one chain of messages, across every agent it reaches
(pure: no clock, no I/O; time is the records' own).

A chain is everything caused, directly or not, by one root message: its records carry the
root's id as their correlation id (the sidecar stamps it, the agent does not choose it:
``sidecar.reports``). Per-agent windows cannot bound a chain, since its spend is spread over
agents, so the kill-switch's second stage keeps one :class:`_Chain` per correlation id, fed
under the key ``chain:ID`` (``processors/killswitch/processor.py``), and a rule that fires
halts that chain alone (``Scope.CHAIN``): the same agents go on serving other chains.

Rules (``[chain]`` in the kill-switch policy; a limit is a maximum, exactly at it is allowed):

* ``chain_spend``: dollars spent by the whole chain (``max_cost_usd``);
* ``chain_tokens``: model tokens, input plus output (``max_tokens``);
* ``chain_depth``: the deepest hop reached (``max_depth``);
* ``chain_fan_out``: messages one agent sent at one hop of the chain, which is the replies it
  made to what it received at the hop before (``max_fan_out``);
* ``chain_deadline``: a record more than ``deadline_s`` after the chain's first one.

A chain not seen for an hour is forgotten (the longest window the kill-switch replays).

Memory: most chains are short (a request and its answer) and then idle for good, yet the
budget and the deadline must still hold if one wakes up. A chain idle for ``_DORMANT_MS`` is
kept as a :class:`_Dormant` tuple (its start, its totals), without its per-agent fan-out
counts, participants and evidence; a record for it revives it with those totals. (The soak,
``bench/soak.py``, at twenty new chains a second, found the kill-switch's memory growing by
about 2 MiB a minute while every chain's full record was kept for its hour.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from processors.killswitch.policy import ChainLimits
from processors.killswitch.watch import Firing

__all__ = ["ChainObservation", "ChainWatch"]

_FORGET_MS = 3_600_000
_DORMANT_MS = 120_000


class ChainObservation(NamedTuple):
    event_id: str
    correlation_id: str
    agent_id: str
    at_ms: int
    kind: str
    hop_count: int = 0
    cost_usd: float = 0.0
    tokens: int = 0


@dataclass(slots=True)
class _Chain:
    first_ms: int
    last_ms: int
    cost_usd: float = 0.0
    tokens: int = 0
    depth: int = 0
    sent: dict[tuple[str, int], int] = field(default_factory=dict)
    agents: set[str] = field(default_factory=set)
    evidence: list[str] = field(default_factory=list)

    def dormant(self) -> _Dormant:
        return _Dormant(self.first_ms, self.last_ms, self.cost_usd, self.tokens, self.depth)


class _Dormant(NamedTuple):
    """An idle chain's start and totals: enough for its budget, tokens, depth and deadline."""

    first_ms: int
    last_ms: int
    cost_usd: float
    tokens: int
    depth: int

    def revived(self) -> _Chain:
        return _Chain(self.first_ms, self.last_ms, self.cost_usd, self.tokens, self.depth)


class ChainWatch:
    def __init__(self, limits: ChainLimits) -> None:
        self.limits = limits
        self._chains: dict[str, _Chain] = {}
        self._dormant: dict[str, _Dormant] = {}
        self._seen = 0

    def __len__(self) -> int:
        return len(self._chains) + len(self._dormant)

    @property
    def active(self) -> int:
        """Chains kept in full (seen in the last ``_DORMANT_MS``)."""
        return len(self._chains)

    def participants(self, correlation_id: str) -> list[str]:
        chain = self._chains.get(correlation_id)
        return [] if chain is None else sorted(chain.agents)

    def forget(self, correlation_id: str) -> None:
        self._chains.pop(correlation_id, None)
        self._dormant.pop(correlation_id, None)

    def observe(self, obs: ChainObservation) -> Firing | None:
        """Feed one record of a chain; the first chain rule it makes fire, if any."""
        self._seen += 1
        if self._seen % 1000 == 0:
            self._forget_idle(obs.at_ms)
        chain = self._chains.get(obs.correlation_id)
        if chain is None:
            asleep = self._dormant.pop(obs.correlation_id, None)
            chain = asleep.revived() if asleep else _Chain(obs.at_ms, obs.at_ms)
            self._chains[obs.correlation_id] = chain
        chain.last_ms = max(chain.last_ms, obs.at_ms)
        chain.agents.add(obs.agent_id)
        chain.evidence = [*chain.evidence[-49:], obs.event_id]
        chain.cost_usd += obs.cost_usd
        chain.tokens += obs.tokens
        chain.depth = max(chain.depth, obs.hop_count)
        if obs.kind == "MESSAGE_SENT":
            hop = (obs.agent_id, obs.hop_count)
            chain.sent[hop] = chain.sent.get(hop, 0) + 1
        return self._rule(obs, chain)

    def _rule(self, obs: ChainObservation, chain: _Chain) -> Firing | None:
        limits, corr = self.limits, obs.correlation_id
        evidence = tuple(chain.evidence)
        if chain.cost_usd > limits.max_cost_usd + 1e-9:
            return Firing(
                "chain_spend",
                corr,
                f"chain {corr} spent ${chain.cost_usd:.4f} across {len(chain.agents)} agent(s), "
                f"over its budget of ${limits.max_cost_usd:.4f}",
                evidence,
            )
        if chain.tokens > limits.max_tokens:
            return Firing(
                "chain_tokens",
                corr,
                f"chain {corr} used {chain.tokens} model tokens, over its limit of "
                f"{limits.max_tokens}",
                evidence,
            )
        if chain.depth > limits.max_depth:
            return Firing(
                "chain_depth",
                corr,
                f"chain {corr} reached hop {chain.depth}, deeper than its limit of "
                f"{limits.max_depth}",
                evidence,
            )
        sent = chain.sent.get((obs.agent_id, obs.hop_count), 0)
        if obs.kind == "MESSAGE_SENT" and sent > limits.max_fan_out:
            return Firing(
                "chain_fan_out",
                corr,
                f"{obs.agent_id!r} sent {sent} messages at hop {obs.hop_count} of chain {corr}, "
                f"a fan-out over its limit of {limits.max_fan_out}",
                evidence,
            )
        age_s = (obs.at_ms - chain.first_ms) / 1000
        if age_s > limits.deadline_s:
            return Firing(
                "chain_deadline",
                corr,
                f"chain {corr} is still working {age_s:.0f}s after it began, past its deadline "
                f"of {limits.deadline_s:g}s",
                evidence,
            )
        return None

    def _forget_idle(self, now_ms: int) -> None:
        idle = [c for c, chain in self._chains.items() if now_ms - chain.last_ms > _DORMANT_MS]
        for correlation_id in idle:
            self._dormant[correlation_id] = self._chains.pop(correlation_id).dormant()
        gone = [c for c, chain in self._dormant.items() if now_ms - chain.last_ms > _FORGET_MS]
        for correlation_id in gone:
            del self._dormant[correlation_id]
