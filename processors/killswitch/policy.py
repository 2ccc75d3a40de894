"""The kill-switch policy: rules and thresholds, loaded from a TOML file and validated.

Every limit is a *maximum*: a rule fires when the observed value goes **over** it (exactly at
the limit is allowed). A window of ``W`` seconds ending at ``t`` holds the events with a time
in ``(t - W, t]``: an event exactly ``W`` old has left it.

Example (every key optional; these are the defaults)::

    [agent]                       # limits for every agent
    max_cost_per_minute = 1.0     # US dollars
    max_cost_per_hour = 20.0
    max_repeated_tool_calls = 5   # same tool, same arguments, within repeat_window_s
    repeat_window_s = 60
    max_cycle_repeats = 4         # the same agent->peer hop within one correlation
    max_hop_count = 10
    max_errors = 20               # within error_window_s
    error_window_s = 60
    max_refusals = 20             # policy refusals (forbidden tools, recipients, arguments,
    refusal_window_s = 60         # budgets) within refusal_window_s: contained

    [fleet]
    max_cost_per_minute = 20.0
    max_cost_per_hour = 400.0
    max_errors = 200
    error_window_s = 60

    [chain]                       # every chain of messages, across all its agents
    max_cost_usd = 5.0            # (processors/killswitch/chains.py); a rule that fires
    max_tokens = 2000000          # halts that chain alone
    max_depth = 12
    max_fan_out = 10
    deadline_s = 3600

    [rates]                       # fleet-wide actions per window, per kind (none by default):
    window_s = 10                 # over a limit, that kind is throttled for throttle_s (every
    throttle_s = 10               # sidecar refuses it, 'throttled', retry later); over
    halt_factor = 2.0             # halt_factor x the limit, the fleet is halted
    TOOL_CALL = 500
    MESSAGE_SENT = 2000

    [agents.researcher]           # per-agent overrides, and the tools it may call
    max_cost_per_minute = 2.0
    allowed_tools = ["search", "fetch"]

    [radius]                      # blast radius per rule: agent, dependants, capability, fleet
    causation_cycle = "dependants"
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from mesh.errors import ConfigError

__all__ = [
    "AGENT_RULES",
    "CHAIN_RULES",
    "FLEET_RULES",
    "ChainLimits",
    "FleetLimits",
    "Limits",
    "Policy",
    "RateLimits",
    "load_policy",
]

AGENT_RULES = (
    "spend_per_minute",
    "spend_per_hour",
    "repeated_tool_call",
    "causation_cycle",
    "hop_limit",
    "tool_not_allowed",
    "error_storm",
    "refusal_storm",
)
FLEET_RULES = (
    "fleet_spend_per_minute",
    "fleet_spend_per_hour",
    "fleet_error_storm",
    "fleet_rate",
)
#: The kinds of action a fleet-wide rate limit may count (telemetry kinds).
RATED_KINDS = ("TOOL_CALL", "MODEL_CALL", "MESSAGE_SENT")
CHAIN_RULES = ("chain_spend", "chain_tokens", "chain_depth", "chain_fan_out", "chain_deadline")
SCOPES = ("agent", "dependants", "capability", "fleet")


@dataclass(frozen=True, slots=True)
class Limits:
    max_cost_per_minute: float = 1.0
    max_cost_per_hour: float = 20.0
    max_repeated_tool_calls: int = 5
    repeat_window_s: float = 60.0
    max_cycle_repeats: int = 4
    max_hop_count: int = 10
    max_errors: int = 20
    error_window_s: float = 60.0
    max_refusals: int = 20
    refusal_window_s: float = 60.0
    allowed_tools: frozenset[str] | None = None  # None: any tool


@dataclass(frozen=True, slots=True)
class FleetLimits:
    max_cost_per_minute: float = 20.0
    max_cost_per_hour: float = 400.0
    max_errors: int = 200
    error_window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ChainLimits:
    max_cost_usd: float = 5.0
    max_tokens: int = 2_000_000
    max_depth: int = 12
    max_fan_out: int = 10
    deadline_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    window_s: float = 10.0
    throttle_s: float = 10.0
    halt_factor: float = 2.0
    limits: Mapping[str, int] = field(default_factory=dict)  # kind -> actions per window


@dataclass(frozen=True, slots=True)
class Policy:
    agent: Limits = field(default_factory=Limits)
    fleet: FleetLimits = field(default_factory=FleetLimits)
    chain: ChainLimits = field(default_factory=ChainLimits)
    rates: RateLimits = field(default_factory=RateLimits)
    agents: Mapping[str, Limits] = field(default_factory=dict)
    radius: Mapping[str, str] = field(default_factory=dict)

    def limits(self, agent_id: str) -> Limits:
        return self.agents.get(agent_id, self.agent)

    @property
    def digest(self) -> str:
        """SHA-256 of the policy's canonical JSON: stamped on every halt it decides."""
        return hashlib.sha256(json.dumps(_plain(self), sort_keys=True).encode()).hexdigest()

    def scope(self, rule: str) -> str:
        if rule in CHAIN_RULES:
            return "chain"
        return self.radius.get(rule, "fleet" if rule in FLEET_RULES else "agent")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def load_policy(path: Path | None) -> Policy:
    """The policy in ``path`` (None: the defaults); ConfigError says what is wrong and where."""
    if path is None:
        return Policy()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the kill-switch policy {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the kill-switch policy {path} is not valid TOML: {exc}") from exc
    return parse_policy(data, str(path))


def parse_policy(data: Mapping[str, Any], where: str = "policy") -> Policy:
    _only(data, {"agent", "fleet", "chain", "rates", "agents", "radius"}, where)
    agent = _limits(Limits(), _table(data, "agent", where), f"{where} [agent]")
    fleet = _limits(FleetLimits(), _table(data, "fleet", where), f"{where} [fleet]")
    chain = _limits(ChainLimits(), _table(data, "chain", where), f"{where} [chain]")
    rates = _rates(_table(data, "rates", where), f"{where} [rates]")
    agents = {
        agent_id: _limits(agent, _table(overrides, None, where), f"{where} [agents.{agent_id}]")
        for agent_id, overrides in _table(data, "agents", where).items()
    }
    radius = dict(_table(data, "radius", where))
    for rule, scope in radius.items():
        if rule not in AGENT_RULES + FLEET_RULES:
            raise ConfigError(f"{where} [radius]: unknown rule {rule!r}; rules: {_names()}")
        if scope not in SCOPES or (rule in FLEET_RULES and scope != "fleet"):
            allowed = "fleet" if rule in FLEET_RULES else ", ".join(SCOPES)
            raise ConfigError(f"{where} [radius]: {rule} = {scope!r}; choose {allowed}")
    return Policy(agent, fleet, chain, rates, agents, radius)


def _rates(values: Mapping[str, Any], where: str) -> RateLimits:
    limits = {k: v for k, v in values.items() if k in RATED_KINDS}
    for kind, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{where}: {kind} must be a whole number above 0, not {value!r}")
    rest = {k: v for k, v in values.items() if k not in RATED_KINDS}
    unknown = sorted(set(rest) - {"window_s", "throttle_s", "halt_factor"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; expected window_s, throttle_s, halt_factor "
            f"or a kind of action ({', '.join(RATED_KINDS)})"
        )
    base: RateLimits = _limits(RateLimits(), rest, where)
    if base.halt_factor < 1:
        raise ConfigError(f"{where}: halt_factor must be 1 or more, not {base.halt_factor}")
    return replace(base, limits=limits)


def _names() -> str:
    return ", ".join(AGENT_RULES + FLEET_RULES)


def _table(data: Any, name: str | None, where: str) -> Mapping[str, Any]:
    value = data if name is None else data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {name or 'each [agents.ID]'} must be a table")
    return value


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected {sorted(allowed)}")


def _limits(base: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(base)}
    _only(values, set(known), where)
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name == "allowed_tools":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: allowed_tools must be a list of tool names")
            changes[name] = frozenset(value)
            continue
        wanted = int if isinstance(getattr(base, name), int) else float
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {name} must be a number, not {value!r}")
        if wanted is int and not float(value).is_integer():
            raise ConfigError(f"{where}: {name} must be a whole number, not {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: {name} must be greater than 0, not {value!r}")
        changes[name] = wanted(value)
    return replace(base, **changes)
