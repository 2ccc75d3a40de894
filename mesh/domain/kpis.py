"""Board-grade KPIs (pure): what each fact in the mesh adds to which totals, and the figures a
CFO reads from them.

Every KPI is a ratio of sums, so the totals are kept as sums (:class:`Totals`) that add up in
any order and from any number of pieces: the ``kpis`` processor keeps them per scope, per
five-minute bucket and per input partition, a reader adds the pieces up, and `mesh kpis
--from-audit` folds the same facts from the audit log's original bytes with the same
functions here, so the two can only differ by what one of them has not read yet.

Scopes: ``fleet``, ``agent:<id>`` and ``workflow:<name>`` (the ``workflow`` a task's
``REQUESTED`` event names; a task that names none is ``workflow:-``). What counts:

* **tasks** (``REQUESTED``, once per task), **completed** and **failed** (each once per task)
  and the **value** a ``COMPLETED`` event attributes; fleet and workflow, and the completing
  or failing agent;
* **cost**: every model and tool call's ``cost_usd`` from telemetry (fleet, agent); a call
  made for a task also counts for the task's workflow (:func:`task_cost`);
* **escalations** (``ESCALATED``) and **manual halts** (operator halts): the intervention
  rate, per 100 tasks;
* **halts** and the agents each reached (``affected_agents``): the blast radius. A drill's
  halt (the canary's, or ``mesh gates drill``) tests the kill-switch: it is not counted as a
  halt or an intervention;
* **time to halt**: from a halt's trigger to each sidecar's ``HALT_ACK`` (its ``latency_ms``),
  and each passing drill's halt (``halt_ms``): the mean time to halt;
* **handoffs**, and those of tasks that then failed: the handoff failure rate;
* **messages** sent and received (``MESSAGE_SENT``, by sender and by its peer) and **errors**
  reported (``ERROR``): the console's activity per agent.

A workflow may declare what a task costs without agents (:class:`Baseline`, human minutes at a
rate, or a per-run cost of existing automation); the figures then show the saving or loss per
completed task against it, with the assumption written beside it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mesh.domain.drills import CANARY
from mesh.errors import ConfigError

__all__ = [
    "BUCKET_MS",
    "FLEET",
    "WINDOWS",
    "Baseline",
    "Delta",
    "KpiBook",
    "KpiView",
    "TaskTrack",
    "Totals",
    "bucket_of",
    "control_fact",
    "drill_fact",
    "figures",
    "parse_baselines",
    "parse_piece_key",
    "piece_key",
    "placed",
    "task_cost",
    "task_fact",
    "telemetry_fact",
    "total",
]

FLEET = "fleet"
BUCKET_MS = 300_000
#: window name -> milliseconds (None: all time)
WINDOWS: dict[str, int | None] = {
    "5m": 300_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
    "all": None,
}
_SPEND_KINDS = ("MODEL_CALL", "TOOL_CALL")
_DRILL_REASONS = ("scheduled kill-switch drill", "gates drill")


@dataclass(frozen=True, slots=True)
class Totals:
    tasks: int = 0
    completed: int = 0
    failed: int = 0
    value_usd: float = 0.0
    cost_usd: float = 0.0
    escalations: int = 0
    manual_halts: int = 0
    halts: int = 0
    halted_agents: int = 0
    halt_ms: float = 0.0
    halt_samples: int = 0
    handoffs: int = 0
    failed_handoffs: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    errors: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*[getattr(self, n) + getattr(other, n) for n in _TOTALS])

    def to_record(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in _TOTALS}  # not asdict(): it deep-copies

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Totals:
        return cls(**{n: record.get(n, 0) for n in _TOTALS})


_TOTALS = tuple(f.name for f in fields(Totals))


def total(pieces: Iterable[Totals]) -> Totals:
    found = Totals()
    for piece in pieces:
        found = found + piece
    return found


#: (scope, what it adds)
Delta = tuple[str, Totals]


@dataclass(frozen=True, slots=True)
class TaskTrack:
    """What the KPIs remember of one task: its workflow, its handoffs, what was counted, and
    cost that arrived before the task said its workflow."""

    workflow: str | None = None
    requested: bool = False
    ended: str = ""  # COMPLETED or FAILED, once counted
    handoffs: int = 0
    pending_cost_usd: float = 0.0
    at_ms: int = 0


def bucket_of(at_ms: int) -> int:
    return at_ms - at_ms % BUCKET_MS


def _scope(workflow: str | None) -> str:
    return f"workflow:{workflow or '-'}"


def task_fact(
    track: TaskTrack | None, body: Mapping[str, Any], at_ms: int
) -> tuple[TaskTrack, list[Delta]]:
    """A ``TaskEvent``: the task's track after it, and what it adds."""
    track = track or TaskTrack()
    kind, actor = str(body.get("kind")), f"agent:{body.get('actor')}"
    workflow = track.workflow or body.get("workflow")
    deltas: list[Delta] = []
    if workflow and not track.workflow and track.pending_cost_usd:  # its cost, now placed
        deltas.append((_scope(workflow), Totals(cost_usd=track.pending_cost_usd)))
        track = replace(track, pending_cost_usd=0.0)
    track = replace(track, workflow=workflow, at_ms=max(track.at_ms, at_ms))
    here = (FLEET, _scope(workflow))
    if kind == "REQUESTED" and not track.requested:
        track = replace(track, requested=True)
        deltas += [(s, Totals(tasks=1)) for s in here]
    elif kind in ("COMPLETED", "FAILED") and not track.ended:
        if kind == "COMPLETED":
            done = Totals(completed=1, value_usd=float(body.get("value_usd") or 0.0))
        else:
            done = Totals(failed=1, failed_handoffs=track.handoffs)
        track = replace(track, ended=kind)
        deltas += [(s, done) for s in (*here, actor)]
    elif kind == "HANDED_OFF":
        track = replace(track, handoffs=track.handoffs + 1)
        deltas += [(s, Totals(handoffs=1)) for s in (*here, actor)]
    elif kind == "ESCALATED":
        deltas += [(s, Totals(escalations=1)) for s in (*here, actor)]
    return track, deltas


def task_cost(track: TaskTrack | None, cost_usd: float) -> tuple[TaskTrack, list[Delta]]:
    """A call's cost made for a task: its workflow's, or kept until the task names one."""
    track = track or TaskTrack()
    if track.workflow is None:
        return replace(track, pending_cost_usd=track.pending_cost_usd + cost_usd), []
    return track, [(_scope(track.workflow), Totals(cost_usd=cost_usd))]


def telemetry_fact(agent_id: str, body: Mapping[str, Any]) -> tuple[float, list[Delta]]:
    """A telemetry record: (the cost it reports, what it adds to the fleet and the agent)."""
    kind, scopes = body.get("kind"), (FLEET, f"agent:{agent_id}")
    if kind in _SPEND_KINDS:
        cost = float(body.get("cost_usd") or 0.0)
        return cost, [(s, Totals(cost_usd=cost)) for s in scopes] if cost else []
    latency = body.get("latency_ms")
    if kind == "HALT_ACK" and latency:
        return 0.0, [(s, Totals(halt_ms=float(latency), halt_samples=1)) for s in scopes]
    if kind == "MESSAGE_SENT":
        sent: list[Delta] = [(s, Totals(messages_sent=1)) for s in scopes]
        if body.get("peer"):
            sent.append((f"agent:{body['peer']}", Totals(messages_received=1)))
        return 0.0, sent
    if kind == "ERROR":
        return 0.0, [(s, Totals(errors=1)) for s in scopes]
    return 0.0, []


def control_fact(body: Mapping[str, Any]) -> list[Delta]:
    """A control command: a halt counts, with the agents it reached; an operator's counts as
    an intervention. A drill's halt is a test, not a halt: its time to halt counts from its
    result (:func:`drill_fact`), nothing else."""
    if body.get("action") != "HALT":
        return []
    reason = str(body.get("reason", ""))
    if body.get("target") == CANARY or reason.startswith(_DRILL_REASONS):
        return []
    affected = list(body.get("affected_agents") or ())
    manual = int(body.get("rule") == "operator")
    halt = Totals(halts=1, halted_agents=len(affected), manual_halts=manual)
    each = Totals(halts=1, manual_halts=manual)
    return [(FLEET, halt)] + [(f"agent:{a}", each) for a in affected]


def drill_fact(body: Mapping[str, Any]) -> list[Delta]:
    """A passing drill's halt time counts towards the mean time to halt."""
    if not body.get("ok") or body.get("halt_ms") is None:
        return []
    return [(FLEET, Totals(halt_ms=float(body["halt_ms"]), halt_samples=1))]


# -- the figures -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a task of a workflow costs without agents, and how that was reckoned."""

    usd_per_task: float
    assumption: str


def parse_baselines(text: str, where: str = "workflows") -> dict[str, Baseline]:
    """``[workflow.NAME]`` tables: ``human_minutes`` and ``usd_per_hour`` (a person's time),
    or ``usd_per_run`` (existing automation); ``note`` is added to the assumption."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    found = {}
    for name, table in (data.get("workflow") or {}).items():
        found[name] = _baseline(name, table, where)
    return found


def _baseline(name: str, table: Mapping[str, Any], where: str) -> Baseline:
    note = f"; {table['note']}" if table.get("note") else ""
    unknown = set(table) - {"human_minutes", "usd_per_hour", "usd_per_run", "note"}
    if unknown:
        raise ConfigError(f"{where}: workflow.{name}: unknown key {sorted(unknown)[0]!r}")
    if "usd_per_run" in table:
        run = _number(table["usd_per_run"], f"{where}: workflow.{name}.usd_per_run")
        return Baseline(run, f"existing automation at ${run:.2f} per run{note}")
    if {"human_minutes", "usd_per_hour"} <= set(table):
        minutes = _number(table["human_minutes"], f"{where}: workflow.{name}.human_minutes")
        rate = _number(table["usd_per_hour"], f"{where}: workflow.{name}.usd_per_hour")
        return Baseline(
            minutes * rate / 60, f"{minutes:g} minutes of a person at ${rate:.2f}/h{note}"
        )
    raise ConfigError(
        f"{where}: workflow.{name} needs usd_per_run, or human_minutes and usd_per_hour"
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where} must be a number >= 0, not {value!r}")
    return float(value)


def figures(t: Totals, baseline: Baseline | None = None) -> dict[str, Any]:
    """The KPIs of one scope and window (None where a figure has no denominator yet)."""
    ended = t.completed + t.failed
    found: dict[str, Any] = {
        "tasks": t.tasks,
        "completed": t.completed,
        "failed": t.failed,
        "value_usd": round(t.value_usd, 6),
        "cost_usd": round(t.cost_usd, 6),
        "roi": _ratio(t.value_usd - t.cost_usd, t.cost_usd),
        "cost_per_task_usd": _ratio(t.cost_usd, t.tasks),
        "cost_per_completed_task_usd": _ratio(t.cost_usd, t.completed),
        "intervention_rate_per_100": _ratio(100 * (t.escalations + t.manual_halts), t.tasks),
        "escalations": t.escalations,
        "manual_halts": t.manual_halts,
        "halts": t.halts,
        "blast_radius_agents_per_halt": _ratio(t.halted_agents, t.halts),
        "mean_time_to_halt_ms": _ratio(t.halt_ms, t.halt_samples),
        "task_success_rate": _ratio(t.completed, ended),
        "handoffs": t.handoffs,
        "handoff_failure_rate": _ratio(t.failed_handoffs, t.handoffs),
        "messages_sent": t.messages_sent,
        "messages_received": t.messages_received,
        "errors": t.errors,
    }
    if baseline is not None:
        per_task = _ratio(t.cost_usd, t.completed)
        saving = None if per_task is None else round(baseline.usd_per_task - per_task, 6)
        found |= {
            "baseline_usd_per_task": round(baseline.usd_per_task, 6),
            "saving_per_task_usd": saving,
            "saving_usd": None if saving is None else round(saving * t.completed, 6),
            "baseline_assumption": baseline.assumption,
        }
    return found


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if not denominator else round(numerator / denominator, 6)


# -- folding and reading -----------------------------------------------------------------------


def piece_key(scope: str, at_ms: int | None) -> str:
    """The state key of a scope's totals over one bucket (``at_ms``) or all time (None)."""
    return f"t|{scope}|{'all' if at_ms is None else bucket_of(at_ms)}"


def parse_piece_key(key: str) -> tuple[str, int | None] | None:
    """(scope, bucket start or None for all time) of a totals key; None for any other key."""
    if not key.startswith("t|"):
        return None
    scope, _, bucket = key[2:].rpartition("|")
    return scope, None if bucket == "all" else int(bucket)


def placed(deltas: Iterable[Delta], at_ms: int) -> Iterator[tuple[str, int | None, Totals]]:
    """Where each delta counts: its scope's five-minute bucket of ``at_ms``, and all time
    (None). The processor and :class:`KpiView` both place deltas so."""
    for scope, delta in deltas:
        yield scope, bucket_of(at_ms), delta
        yield scope, None, delta


class KpiView:
    """Totals by (scope, bucket start or None for all time), added up from pieces."""

    def __init__(self) -> None:
        self.pieces: dict[tuple[str, int | None], Totals] = {}

    def add(self, scope: str, bucket: int | None, totals: Totals) -> None:
        held = self.pieces.get((scope, bucket))
        self.pieces[(scope, bucket)] = totals if held is None else held + totals

    def add_deltas(self, deltas: Iterable[Delta], at_ms: int) -> None:
        for scope, bucket, delta in placed(deltas, at_ms):
            self.add(scope, bucket, delta)

    def scopes(self) -> list[str]:
        return sorted({scope for scope, _ in self.pieces})

    def window(self, scope: str, window: str, now_ms: int) -> Totals:
        """A scope's totals over ``window`` (``1h``, ``1d``: whole five-minute buckets back
        from now; ``all``)."""
        span = WINDOWS[window]
        if span is None:
            return self.pieces.get((scope, None), Totals())
        since = bucket_of(now_ms - span)
        return total(
            t for (s, bucket), t in self.pieces.items()
            if s == scope and bucket is not None and bucket >= since
        )  # fmt: skip


class KpiBook(KpiView):
    """The same facts folded in one place (`mesh kpis --from-audit`, tests): a task's cost is
    placed at once, as the processor places it when it comes back re-keyed."""

    def __init__(self) -> None:
        super().__init__()
        self.tracks: dict[str, TaskTrack] = {}

    def task_event(self, body: Mapping[str, Any], at_ms: int) -> None:
        task_id = str(body["task_id"])
        self.tracks[task_id], deltas = task_fact(self.tracks.get(task_id), body, at_ms)
        self.add_deltas(deltas, at_ms)

    def telemetry(
        self, agent_id: str, task_id: str | None, body: Mapping[str, Any], at_ms: int
    ) -> None:
        cost, deltas = telemetry_fact(agent_id, body)
        self.add_deltas(deltas, at_ms)
        if cost and task_id:
            self.tracks[task_id], placed = task_cost(self.tracks.get(task_id), cost)
            self.add_deltas(placed, at_ms)

    def control(self, body: Mapping[str, Any], at_ms: int) -> None:
        self.add_deltas(control_fact(body), at_ms)

    def drill(self, body: Mapping[str, Any]) -> None:
        self.add_deltas(drill_fact(body), int(body["at"]))
