"""An agent's own policy, enforced by its sidecar before anything leaves the process.

Pure logic: no clients, no clock of its own (every check takes ``now``). The kill-switch
(``processors/killswitch``) watches what agents *did*; this policy stops what an agent is
*about to do*, so a refused send never reaches Kafka at all.

Policies belong to the operator (:mod:`mesh.domain.policies`, ``docs/policy.md``): the sidecar
enforces :func:`narrowest` of the operator's policy in force and the agent's own, which is
declared at registration (``policy_json`` of ``AgentRegistered``) and can only tighten it.
JSON form (every key optional)::

    {"allowed_recipients": ["research", "drafting"],   # agents it may message (null: any)
     "allowed_capabilities": ["review"],               # capabilities it may address
     "allowed_tools": ["search", "fetch"],             # tools it may be permitted to call
     "tools": {"search": {                             # per tool (sidecar.permits):
         "arguments": {"type": "object", ...},         #   a JSON Schema its arguments must fit
         "max_cost_usd": 0.05,                         #   the most one call may reserve
         "requires_approval": false,                   #   true: an operator approves each call
         "approvers": ["operator:cfo"]}},              #   who may (null: any operator)
     "permit_ttl_s": 300,                              # how long a tool permit stays valid
     "may_start_chains": true,                         # false: every send and tool call must
                                                       # serve a delivered message (its chain)
     "budget_usd": 5.0, "budget_window_s": 3600,       # spend allowed per sliding window
     "max_hop_count": 10,                              # longest causation chain it may extend
     "max_message_bytes": 262144,                      # largest message it may send
     "message_parts": ["DATA"],                        # part kinds it may send (null: any)
     "message_data": {"type": "object", ...},          # a JSON Schema each DATA part must fit
     "require_killswitch_s": 30}                       # fail closed: refuse spend-bearing
                                                       # calls while the kill-switch has not
                                                       # heartbeaten for this long (null: never)

Limits are maxima: exactly at a limit is allowed; over it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mesh.errors import ConfigError, ControlUnavailableError, PolicyViolationError
from sidecar.constraints import PART_KINDS, check_message_parts, check_schema
from sidecar.permits import check_arguments

__all__ = ["AgentPolicy", "ToolRule", "narrowest", "parse_agent_policy"]

#: The subject of an agent-to-agent message, the only one whose content the policy shapes.
A2A_MESSAGE = "mesh.a2a.Message"


@dataclass(frozen=True, slots=True)
class ToolRule:
    """What the policy says about one tool: JSON Schemas its arguments must all fit (the
    operator's and the agent's own), and the most one call may cost."""

    schemas: tuple[Mapping[str, Any], ...] = ()
    max_cost_usd: float | None = None
    requires_approval: bool = False  # a permit needs an operator's approval of the exact call
    #: Who may approve a call of it (operator ids); None: any operator among the trust anchors.
    approvers: frozenset[str] | None = None

    def to_json(self) -> dict[str, Any]:
        arguments: Any = None
        if len(self.schemas) == 1:
            arguments = self.schemas[0]
        elif self.schemas:
            arguments = {"allOf": list(self.schemas)}
        return {
            "arguments": arguments,
            "max_cost_usd": self.max_cost_usd,
            "requires_approval": self.requires_approval,
            "approvers": None if self.approvers is None else sorted(self.approvers),
        }


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    allowed_recipients: frozenset[str] | None = None  # None: any agent
    allowed_capabilities: frozenset[str] | None = None  # None: any capability
    allowed_tools: frozenset[str] | None = None  # None: any tool
    budget_usd: float | None = None  # None: no budget
    budget_window_s: float = 3600.0
    max_hop_count: int = 10
    max_message_bytes: int = 1_048_576
    require_killswitch_s: float | None = None  # None: spend does not wait for the kill-switch
    tools: Mapping[str, ToolRule] = field(default_factory=dict)
    permit_ttl_s: float = 300.0
    may_start_chains: bool = True
    #: Kinds of message part it may send (TEXT, DATA, FILE; None: any), and JSON Schemas every
    #: DATA part it sends must fit: checked on sending and again on receipt (AISVS C9.5.4).
    message_parts: frozenset[str] | None = None
    message_data: tuple[Mapping[str, Any], ...] = ()
    #: The hash of the policy's JSON, computed once: ``tools`` is a dict, so the dataclass
    #: cannot hash its fields, and the sidecar looks a policy up on every send.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(self.to_json()))

    def __hash__(self) -> int:
        return self._hash

    def check_permit(self, tool: str, arguments: Any, cost_usd: float) -> float:
        """Refuse a tool call outside the policy *before* it runs; returns what to reserve
        (the cost asked for, else the tool's ``max_cost_usd``, else 0)."""
        self.check_tool(tool)
        rule = self.tools.get(tool, ToolRule())
        check_arguments(tool, rule.schemas, arguments)
        if cost_usd < 0 or not math.isfinite(cost_usd):
            raise PolicyViolationError("bad_cost", f"cost_usd must be >= 0, not {cost_usd}")
        if rule.max_cost_usd is not None and cost_usd > rule.max_cost_usd + 1e-12:
            raise PolicyViolationError(
                "tool_cost_exceeded",
                f"a call of {tool!r} may cost at most ${rule.max_cost_usd:.4f}; "
                f"${cost_usd:.4f} was asked for",
            )
        return cost_usd or (rule.max_cost_usd or 0.0)

    def check_chain_start(self, has_cause: bool) -> None:
        if not has_cause and not self.may_start_chains:
            raise PolicyViolationError(
                "chain_required",
                "this agent may not start a chain of its own (may_start_chains is false): name "
                "the delivered message this work serves (reply_to / cause)",
            )

    def check_recipient(self, agent_id: str) -> None:
        if self.allowed_recipients is not None and agent_id not in self.allowed_recipients:
            raise PolicyViolationError(
                "recipient_not_allowed",
                f"policy forbids sending to agent {agent_id!r}; allowed recipients: "
                f"{_listed(self.allowed_recipients)}",
            )

    def check_capability(self, capability: str) -> None:
        if self.allowed_capabilities is not None and capability not in self.allowed_capabilities:
            raise PolicyViolationError(
                "capability_not_allowed",
                f"policy forbids addressing capability {capability!r}; allowed capabilities: "
                f"{_listed(self.allowed_capabilities)}",
            )

    def check_tool(self, tool: str) -> None:
        if self.allowed_tools is not None and tool not in self.allowed_tools:
            raise PolicyViolationError(
                "tool_not_allowed",
                f"policy forbids tool {tool!r}; allowed tools: {_listed(self.allowed_tools)}",
            )

    def check_hops(self, hop_count: int) -> None:
        if hop_count > self.max_hop_count:
            raise PolicyViolationError(
                "hop_limit",
                f"this message would be hop {hop_count} of its causation chain, over the "
                f"limit of {self.max_hop_count}; end the chain or start a new task",
            )

    def check_message(self, subject: str, body: Mapping[str, Any], who: str) -> None:
        """Refuse an A2A message whose parts or DATA this policy does not allow."""
        if subject == A2A_MESSAGE and (self.message_parts is not None or self.message_data):
            check_message_parts(body.get("parts"), self.message_parts, self.message_data, who)

    def check_size(self, size: int) -> None:
        if size > self.max_message_bytes:
            raise PolicyViolationError(
                "message_too_large",
                f"message is {size} bytes, over the agent's limit of {self.max_message_bytes}; "
                "send large content as a FILE part with a URI",
            )

    def check_killswitch(self, last_heartbeat_age_s: float | None) -> None:
        """Fail closed: refuse a spend-bearing call while the kill-switch is not seen alive
        (``last_heartbeat_age_s``: None when it never was)."""
        bound = self.require_killswitch_s
        if bound is None or (last_heartbeat_age_s is not None and last_heartbeat_age_s <= bound):
            return
        seen = (
            "has never been seen"
            if last_heartbeat_age_s is None
            else f"was last seen {last_heartbeat_age_s:.0f}s ago"
        )
        raise ControlUnavailableError(
            f"the kill-switch {seen}, and this agent's policy refuses spend-bearing calls while "
            f"it has not been seen for {bound:g}s (require_killswitch_s); retry once it is back"
        )

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "allowed_recipients": _sorted(self.allowed_recipients),
                "allowed_capabilities": _sorted(self.allowed_capabilities),
                "allowed_tools": _sorted(self.allowed_tools),
                "budget_usd": self.budget_usd,
                "budget_window_s": self.budget_window_s,
                "max_hop_count": self.max_hop_count,
                "max_message_bytes": self.max_message_bytes,
                "require_killswitch_s": self.require_killswitch_s,
                "tools": {name: rule.to_json() for name, rule in sorted(self.tools.items())},
                "permit_ttl_s": self.permit_ttl_s,
                "may_start_chains": self.may_start_chains,
                "message_parts": _sorted(self.message_parts),
                "message_data": _one_schema(self.message_data),
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()


def narrowest(operator: AgentPolicy, own: AgentPolicy) -> AgentPolicy:
    """What the sidecar enforces: the operator's policy, narrowed by the agent's own (an agent
    may tighten its limits, never widen them). Every limit is the stricter of the two; allowed
    sets are intersected; two budgets give the smaller amount over the longer window."""
    budget, window = operator.budget_usd, operator.budget_window_s
    if own.budget_usd is not None and (budget is None or own.budget_usd < budget):
        budget = own.budget_usd
    if operator.budget_usd is not None and own.budget_usd is not None:
        window = max(operator.budget_window_s, own.budget_window_s)
    elif operator.budget_usd is None:
        window = own.budget_window_s
    return AgentPolicy(
        allowed_recipients=_both(operator.allowed_recipients, own.allowed_recipients),
        allowed_capabilities=_both(operator.allowed_capabilities, own.allowed_capabilities),
        allowed_tools=_both(operator.allowed_tools, own.allowed_tools),
        budget_usd=budget,
        budget_window_s=window,
        max_hop_count=min(operator.max_hop_count, own.max_hop_count),
        max_message_bytes=min(operator.max_message_bytes, own.max_message_bytes),
        require_killswitch_s=_least(operator.require_killswitch_s, own.require_killswitch_s),
        tools=_tool_rules(operator.tools, own.tools),
        permit_ttl_s=min(operator.permit_ttl_s, own.permit_ttl_s),
        may_start_chains=operator.may_start_chains and own.may_start_chains,
        message_parts=_both(operator.message_parts, own.message_parts),
        message_data=operator.message_data + own.message_data,
    )


def _tool_rules(
    operator: Mapping[str, ToolRule], own: Mapping[str, ToolRule]
) -> dict[str, ToolRule]:
    """Both sides' constraints hold: schemas accumulate, the smaller cost cap wins."""
    rules = {}
    for name in sorted(set(operator) | set(own)):
        a, b = operator.get(name, ToolRule()), own.get(name, ToolRule())
        rules[name] = ToolRule(
            a.schemas + b.schemas,
            _least(a.max_cost_usd, b.max_cost_usd),
            a.requires_approval or b.requires_approval,
            _both(a.approvers, b.approvers),
        )
    return rules


def _both(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


def _least(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def parse_agent_policy(data: Mapping[str, Any] | str | None, where: str = "policy") -> AgentPolicy:
    """An AgentPolicy from its JSON form; ConfigError names the bad key and value."""
    if data is None:
        return AgentPolicy()
    if isinstance(data, str):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a JSON object")
    known = set(AgentPolicy.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected {sorted(known)}")
    values: dict[str, Any] = {}
    for name in ("allowed_recipients", "allowed_capabilities", "allowed_tools"):
        if data.get(name) is not None:
            values[name] = _names(data[name], f"{where}: {name}")
    for name, kind in (
        ("budget_usd", float),
        ("budget_window_s", float),
        ("max_hop_count", int),
        ("max_message_bytes", int),
        ("require_killswitch_s", float),
        ("permit_ttl_s", float),
    ):
        if data.get(name) is not None:
            values[name] = _positive(data[name], kind, f"{where}: {name}")
    if data.get("may_start_chains") is not None:
        if not isinstance(data["may_start_chains"], bool):
            raise ConfigError(f"{where}: may_start_chains must be true or false")
        values["may_start_chains"] = data["may_start_chains"]
    if data.get("tools") is not None:
        values["tools"] = _tools(data["tools"], f"{where}: tools")
    if data.get("message_parts") is not None:
        kinds = _names(data["message_parts"], f"{where}: message_parts")
        if not kinds <= PART_KINDS:
            raise ConfigError(
                f"{where}: message_parts may name only {', '.join(sorted(PART_KINDS))}, not "
                f"{', '.join(sorted(kinds - PART_KINDS))}"
            )
        values["message_parts"] = kinds
    if data.get("message_data") is not None:
        check_schema(data["message_data"], f"{where}: message_data")
        values["message_data"] = (data["message_data"],)
    return AgentPolicy(**values)


def _one_schema(schemas: tuple[Mapping[str, Any], ...]) -> Any:
    """Schemas that must all hold, as one (None when there are none)."""
    if not schemas:
        return None
    return schemas[0] if len(schemas) == 1 else {"allOf": list(schemas)}


def _tools(value: Any, where: str) -> dict[str, ToolRule]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must map tool names to rules")
    rules = {}
    for name, rule in value.items():
        if not isinstance(rule, Mapping):
            raise ConfigError(f"{where}.{name} must be an object")
        unknown = sorted(
            set(rule) - {"arguments", "max_cost_usd", "requires_approval", "approvers"}
        )
        if unknown:
            raise ConfigError(
                f"{where}.{name}: unknown key {unknown[0]!r}; expected arguments, max_cost_usd, "
                "requires_approval, approvers"
            )
        approval = rule.get("requires_approval", False)
        if not isinstance(approval, bool):
            raise ConfigError(f"{where}.{name}.requires_approval must be true or false")
        schemas: tuple[Mapping[str, Any], ...] = ()
        if rule.get("arguments") is not None:
            check_schema(rule["arguments"], f"{where}.{name}.arguments")
            schemas = (rule["arguments"],)
        cap = rule.get("max_cost_usd")
        if cap is not None:
            cap = _positive(cap, float, f"{where}.{name}.max_cost_usd")
        approvers = rule.get("approvers")
        if approvers is not None:
            approvers = _names(approvers, f"{where}.{name}.approvers")
            if not approvers:
                raise ConfigError(
                    f"{where}.{name}.approvers is empty: nobody could approve a call; name an "
                    "operator, or drop the key to let any operator approve"
                )
        rules[str(name)] = ToolRule(schemas, cap, approval, approvers)
    return rules


def _names(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of names, not {value!r}")
    return frozenset(value)


def _positive(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, not {value!r}")
    if kind is int and not float(value).is_integer():
        raise ConfigError(f"{where} must be a whole number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be 0 or more, not {value!r}")
    return kind(value)


def _sorted(names: frozenset[str] | None) -> list[str] | None:
    return None if names is None else sorted(names)


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"
