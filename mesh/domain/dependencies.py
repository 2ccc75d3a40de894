"""The dependency map: declared dependencies plus edges observed in traffic, and who a halt
reaches through it (dependants, capabilities). Pure."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass

from mesh.domain.agents import AgentState, AgentStatus

__all__ = [
    "Edge",
    "Graph",
    "capabilities",
    "dependants",
    "dependency_graph",
    "render",
    "unknown_target",
    "with_capability",
]


@dataclass(frozen=True, slots=True, order=True)
class Edge:
    source: str
    target: str
    kind: str  # "agent" (sends to) or "tool" (calls)
    seen: str  # "declared", "observed" or "declared+observed"


@dataclass(frozen=True, slots=True)
class Graph:
    agents: dict[str, str]  # agent id -> status
    tools: tuple[str, ...]
    edges: tuple[Edge, ...]


def dependency_graph(agents: Mapping[str, AgentState]) -> Graph:
    edges = []
    for agent in agents.values():
        for kind, declared, observed in (
            ("agent", agent.depends_on_agents, agent.observed_agents),
            ("tool", agent.depends_on_tools, agent.observed_tools),
        ):
            for target in sorted({*declared, *observed}):
                seen = "+".join(
                    name
                    for name, has in (
                        ("declared", target in declared),
                        ("observed", target in observed),
                    )
                    if has
                )
                edges.append(Edge(agent.agent_id, target, kind, seen))
    tools = tuple(sorted({e.target for e in edges if e.kind == "tool"}))
    statuses = {a.agent_id: a.status.value for a in agents.values()}
    return Graph(statuses, tools, tuple(sorted(edges)))


def render(graph: Graph, fmt: str) -> str:
    return {"json": _json, "dot": _dot, "mermaid": _mermaid}[fmt](graph)


def _json(graph: Graph) -> str:
    nodes = [{"id": a, "kind": "agent", "status": s} for a, s in sorted(graph.agents.items())]
    nodes += [{"id": t, "kind": "tool"} for t in graph.tools]
    edges = [
        {"from": e.source, "to": e.target, "kind": e.kind, "seen": e.seen} for e in graph.edges
    ]
    return json.dumps({"nodes": nodes, "edges": edges}, indent=2)


def _dot(graph: Graph) -> str:
    lines = ["digraph mesh {", "  rankdir=LR;"]
    lines += [f'  "{a}" [shape=box, label="{a}\\n{s}"];' for a, s in sorted(graph.agents.items())]
    lines += [f'  "{t}" [shape=ellipse];' for t in graph.tools]
    for e in graph.edges:
        style = "dashed" if e.seen == "observed" else "solid"
        lines.append(f'  "{e.source}" -> "{e.target}" [style={style}, label="{e.seen}"];')
    return "\n".join([*lines, "}"])


def _mermaid(graph: Graph) -> str:
    ids = {name: f"n{i}" for i, name in enumerate([*sorted(graph.agents), *graph.tools])}
    lines = ["flowchart LR"]
    lines += [f'  {ids[a]}["{a} ({s})"]' for a, s in sorted(graph.agents.items())]
    lines += [f'  {ids[t]}(("{t}"))' for t in graph.tools]
    for e in graph.edges:
        target = ids.get(e.target) or e.target
        arrow = "-.->" if e.seen == "observed" else "-->"
        lines.append(f"  {ids[e.source]} {arrow}|{e.seen}| {target}")
    return "\n".join(lines)


def dependants(agents: Mapping[str, AgentState], agent_id: str) -> list[str]:
    """Every agent that depends on ``agent_id``, directly or through others (declared or seen)."""
    found: list[str] = []
    frontier = [agent_id]
    while frontier:
        target = frontier.pop()
        for other in sorted(agents.values(), key=lambda a: a.agent_id):
            uses = (*other.depends_on_agents, *other.observed_agents)
            if target in uses and other.agent_id not in found and other.agent_id != agent_id:
                found.append(other.agent_id)
                frontier.append(other.agent_id)
    return found


def capabilities(agent: AgentState | None) -> list[str]:
    """The skill ids of an agent's A2A Agent Card."""
    if agent is None:
        return []
    return list(_skills(agent.agent_card_json))


@functools.lru_cache(maxsize=4096)
def _skills(card_json: str) -> tuple[str, ...]:
    """Parsed once per distinct card: routing and policy lookups ask on every send."""
    try:
        card = json.loads(card_json)
    except ValueError:
        return ()
    skills = card.get("skills", []) if isinstance(card, dict) else []
    return tuple(str(s["id"]) for s in skills if isinstance(s, dict) and "id" in s)


def with_capability(agents: Mapping[str, AgentState], capability: str) -> list[str]:
    return sorted(
        a.agent_id
        for a in agents.values()
        if a.status is not AgentStatus.RETIRED and capability in capabilities(a)
    )


def unknown_target(agents: Mapping[str, AgentState], capability: bool, target: str) -> str | None:
    """Why a halt of ``target`` (an agent id, or a capability if ``capability``) would reach
    nobody, naming the registered ids that are close (None: it names someone)."""
    running = [a for a in agents.values() if a.status is not AgentStatus.RETIRED]
    if capability:
        known = sorted({skill for a in running for skill in capabilities(a)})
        what = "capability"
    else:
        known = sorted(a.agent_id for a in running)
        what = "agent"
    if target in known:
        return None
    close = difflib.get_close_matches(target, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"no registered {what} is called {target!r}{hint}"
