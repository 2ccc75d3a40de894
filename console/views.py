"""What the console draws, built from what the feed holds: pure functions and values, no
I/O (the feed, :mod:`console.feed`, keeps them current).

* a fleet row (:func:`agent_view`), a page's filter (:class:`Filter`);
* a halt in force with who acknowledged it (:func:`halt_view`, :func:`halt_reach`), and
  which rows a change of the halts redoes (:func:`rows_to_redo`);
* the dependency map (:func:`map_graph`, redrawn only when an agent's :func:`map_shape`
  changes);
* the KPI panels, each agent's activity and the fleet's series from the KPI totals
  (:func:`kpi_panels`, :func:`agent_activity`, :func:`fleet_series`), the decisions waiting
  for a person (:func:`waiting_decisions`), and each processor's throughput from two reads
  (:func:`add_rates`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.adapters.acks import Ack, live_targets
from mesh.adapters.approvals import ApprovalLog
from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.control import CHAIN_PREFIX
from mesh.domain.dependencies import capabilities, dependency_graph, render
from mesh.domain.gates import PRODUCTION, certified_for_production
from mesh.domain.kpis import BUCKET_MS, FLEET, KpiView, Totals, figures

__all__ = [
    "Filter",
    "add_rates",
    "agent_activity",
    "agent_view",
    "fleet_series",
    "halt_reach",
    "halt_view",
    "kpi_panels",
    "map_graph",
    "map_shape",
    "rows_to_redo",
    "waiting_decisions",
]


def add_rates(
    status: Mapping[str, Any], before: dict[str, tuple[float, float]], now: float
) -> None:
    """Rates since the last read of the health, set in ``status``: each processor group's
    committed offsets per second (``offsets_per_s``; transaction markers included: an offset is
    a record or a commit's marker) and, from the processors' own /metrics, the records each
    handled per second (``records_per_s``). ``before`` keeps (when, count) between reads; a
    counter that went back (a restarted process) gives no rate until the next read."""
    pairs = (("processors", "committed", "offsets_per_s"),
             ("processor_metrics", "records_in", "records_per_s"))  # fmt: skip
    for part, count, rate in pairs:
        for name, group in (status.get(part) or {}).items():
            value, seen = group.get(count), f"{part}/{name}"
            if value is None:
                continue
            if seen in before and now > before[seen][0] and value >= before[seen][1]:
                then, was = before[seen]
                group[rate] = round((value - was) / (now - then), 1)
            before[seen] = (now, value)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which agents a page asked for: every word must occur in the agent's row (id, status,
    owner, version, environment, certification, skills); at most ``limit`` in a snapshot."""

    words: tuple[str, ...] = ()
    limit: int = 500

    @classmethod
    def parse(cls, text: str | None, limit: int = 500) -> Filter:
        return cls(tuple((text or "").lower().split()), max(1, min(limit, 10_000)))

    def matches(self, agent: Mapping[str, Any]) -> bool:
        if not self.words:
            return True
        text = " ".join(
            str(agent.get(k) or "") for k in
            ("agent_id", "status", "owner", "version", "environment", "certified")
        ).lower() + " " + " ".join(agent.get("skills") or ()).lower()  # fmt: skip
        return all(word in text for word in self.words)


def agent_view(state: AgentState, halt: Mapping[str, Any] | None, now_ms: int) -> dict[str, Any]:
    """One row of the fleet view."""
    if certified_for_production(state, now_ms):
        certified = "production"
    elif PRODUCTION in state.certifications:
        certified = "lapsed"
    else:
        certified = "no"
    return {
        "agent_id": state.agent_id,
        "status": state.status.value,
        "owner": state.owner,
        "version": state.version,
        "environment": state.environment,
        "certified": certified,
        "last_heartbeat": state.last_heartbeat_ms,
        "instances": len(state.instances),
        "skills": capabilities(state),
        "halted_by": None if halt is None else f"{halt['rule']}: {halt['reason']}",
    }


def halt_view(
    key: str,
    command: Mapping[str, Any],
    issued_at: int | None,
    acks: Mapping[str, Ack],
    targets: Iterable[str],
) -> dict[str, Any]:
    """One halt in force: what, why, by whom, whom it reaches, and who stopped how fast.

    ``acks``: its verified HALT_ACKs by instance; ``targets``: the running instances it
    reaches now (``mesh.adapters.acks.live_targets``), so ``waiting`` lists the ones that have
    not acknowledged it. ``slowest_ack_ms``: from the command's produce to the last
    acknowledgement; ``trigger_to_ack_ms``: from the triggering record (automatic halts)."""
    answered = {target for ack in acks.values() for target in ack.targets}
    slowest = max((a.at_ms for a in acks.values()), default=None)
    triggered = [a.latency_ms for a in acks.values() if a.latency_ms > 0]
    return {
        "key": key,
        "scope": command["scope"],
        "target": command["target"],
        "rule": command["rule"],
        "reason": command["reason"],
        "requested_by": command["requested_by"],
        "affected": list(command.get("affected_agents") or ()),
        "evidence": list(command.get("evidence") or ()),
        "command_id": command["command_id"],
        "issued_at": issued_at,
        "acknowledged": sorted(acks),
        "waiting": sorted(t for t in targets if t not in answered),
        "slowest_ack_ms": None
        if slowest is None or issued_at is None
        else max(0, slowest - issued_at),
        "trigger_to_ack_ms": round(max(triggered), 1) if triggered else None,
    }


def rows_to_redo(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> set[str] | None:
    """The agents whose halt may differ between two sets of halts in force (by control key);
    None: any agent's (a fleet or capability halt changed). A chain halt stops no agent."""
    agents: set[str] = set()
    for key in set(before) | set(after):
        old, new = before.get(key), after.get(key)
        if old is new or (old and new and old["command_id"] == new["command_id"]):
            continue
        if key == "*" or key.startswith("capability:"):
            return None
        if not key.startswith(CHAIN_PREFIX):
            agents.add(key)
            for command in (old, new):
                agents.update((command or {}).get("affected_agents") or ())
    return agents


def halt_reach(records: Mapping[str, AgentState], command: Mapping[str, Any]) -> list[str]:
    """The running instances a halt reaches (every agent for a fleet halt) that may still act:
    an agent the registry shows HALTED has acknowledged a halt, so it is not waited for. A
    chain halt stops one chain, not its agents: nobody acknowledges it."""
    if command["scope"] == "CHAIN":
        return []
    affected = command.get("affected_agents") or ()
    acting = {k: v for k, v in records.items() if v.status is AgentStatus.LIVE}
    return live_targets(acting, records if command["scope"] == "FLEET" else affected)


def map_shape(agent: AgentState, view: Mapping[str, Any]) -> object:
    """What the dependency map draws of an agent: status, halt, edges (not heartbeats)."""
    return (agent.status, bool(view["halted_by"]), agent.depends_on_agents,
            agent.depends_on_tools, agent.observed_agents, agent.observed_tools)  # fmt: skip


def map_graph(
    records: Mapping[str, AgentState], views: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(render(dependency_graph(records), "json"))
    for node in graph["nodes"]:
        view = views.get(node["id"])
        node["halted"] = bool(view and view["halted_by"])
    return graph


def agent_activity(view: KpiView, now_ms: int) -> dict[str, dict[str, float]]:
    """Per agent with any: spend, messages out and in and errors over the last hour
    (mesh.kpis.v1; the last minute's spend comes from telemetry, :mod:`console.watch`)."""
    found = {}
    for scope in view.scopes():
        if not scope.startswith("agent:"):
            continue
        hour = view.window(scope, "1h", now_ms)
        if hour == Totals():
            continue
        found[scope.removeprefix("agent:")] = {
            "spend_1h": round(hour.cost_usd, 6), "sent_1h": hour.messages_sent,
            "received_1h": hour.messages_received, "errors_1h": hour.errors,
        }  # fmt: skip
    return found


def fleet_series(view: Any, now_ms: int) -> dict[str, list[float]]:
    """The fleet's spend, completed tasks, messages per second (sent, averaged over the
    bucket) and halts per five-minute bucket over the last day."""
    buckets = sorted(
        (bucket, totals) for (scope, bucket), totals in view.pieces.items()
        if scope == FLEET and bucket is not None and bucket >= now_ms - 86_400_000
    )  # fmt: skip
    return {
        "t": [b / 1000 for b, _ in buckets],
        "cost_usd": [t.cost_usd for _, t in buckets],
        "completed": [float(t.completed) for _, t in buckets],
        "messages_per_s": [  # the current bucket over the part of it gone by
            round(t.messages_sent * 1000 / max(1000, min(BUCKET_MS, now_ms - b)), 3)
            for b, t in buckets
        ],
        "halts": [float(t.halts) for _, t in buckets],
    }


def kpi_panels(view: KpiView, now_ms: int) -> list[dict[str, Any]]:
    """The KPI view: the fleet's and each workflow's figures over the last hour and all time,
    and the fleet's series per five minutes (window ``buckets``)."""
    scopes = [FLEET] + [s for s in view.scopes() if s.startswith("workflow:")]
    panels = [
        {"scope": s, "window": w, **figures(view.window(s, w, now_ms))}
        for s in scopes
        for w in ("1h", "all")
    ]
    panels.append({"scope": FLEET, "window": "buckets", "series": fleet_series(view, now_ms)})
    return panels


def waiting_decisions(log: ApprovalLog, now_ms: int) -> list[dict[str, Any]]:
    """The escalations and approvals waiting for a person, with the exact request."""
    return [
        {"request_id": r.request_id, "agent_id": r.agent_id, "escalation": r.is_escalation,
         "tool": r.tool, "arguments": r.arguments_json, "asked_at": r.requested_at_ms}
        for r in log.book.requests.values() if r.state(now_ms) == "pending"
    ]  # fmt: skip
