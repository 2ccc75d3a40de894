"""The kpis processor: ``mesh.tasks.v1``, telemetry, control and drills -> ``mesh.kpis.v1``.

What each record adds is :mod:`mesh.domain.kpis`; this module places it. State is kept per
input partition (the runtime's keyed state lives on the partition of the record that changed
it), as sums that add up in any order:

* ``t|<scope>|<bucket>`` and ``t|<scope>|all``: the :class:`~mesh.domain.kpis.Totals` of a
  scope over one five-minute bucket and over all time, on this partition. A reader adds the
  pieces of every partition (`mesh kpis`); buckets older than a day and a bucket are dropped.
* ``task|<id>``: what the KPIs remember of one task (its workflow, handoffs, what was
  counted), on the task's partition, dropped a day after its last event.

A model or tool call made for a task belongs to the task's workflow, but telemetry is keyed by
agent and tasks by task: the call's cost is re-keyed by task onto ``mesh.kpis.costs.v1``
(Kafka Streams' repartition, in the same transaction) and added to the workflow when it comes
back on the task's partition (co-partitioned with the tasks and the store).

Only what verifies counts: task events and telemetry signed by the agent's registered key,
halts signed by a control signer, drills by an operator. Others are skipped and counted here;
the processors that own those topics dead-letter them (once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mesh.adapters.policies import operators_of
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.control import check_control
from mesh.domain.drills import DRILL_SUBJECT
from mesh.domain.kpis import (
    BUCKET_MS,
    Delta,
    TaskTrack,
    Totals,
    control_fact,
    drill_fact,
    parse_piece_key,
    piece_key,
    placed,
    task_cost,
    task_fact,
    telemetry_fact,
)
from mesh.domain.tasks import TASK_EVENT
from mesh.domain.telemetry import TELEMETRY_SUBJECT
from mesh.domain.topics import CONTROL, DRILLS, KPI_COSTS, KPIS, TASKS, TELEMETRY
from mesh.errors import MeshError
from processors.api import Context, Event, PunctuationContext, Restore

__all__ = ["KpisProcessor", "State"]

State = Totals | TaskTrack
TASK_COST = "mesh.kpis.TaskCost"
_KEEP_MS = 86_400_000 + BUCKET_MS
_log = logging.getLogger("mesh.kpis")


class KpisProcessor:
    name = "kpis"
    inputs: tuple[str, ...] = (TASKS, TELEMETRY, CONTROL, DRILLS, KPI_COSTS)
    input_patterns: tuple[str, ...] = ()
    store_topic = KPIS
    global_tables: tuple[str, ...] = ("agents",)
    restore = Restore.TABLE
    copartitioned: tuple[str, ...] = (TASKS, KPI_COSTS, KPIS)
    store_subject = "mesh.kpis.KpiState"
    punctuate_every_ms: int | None = 60_000

    def __init__(self, serde: Serde, signers: Mapping[str, bytes]) -> None:
        self.serde = serde
        self.signers = dict(signers)
        self.operators = operators_of(signers)
        self.skipped = 0

    def init(self) -> None:
        return None

    def close(self) -> None:
        return None

    def process(self, event: Event, ctx: Context[State]) -> None:
        if event.topic == KPI_COSTS:  # its own: a record that does not decode is dead-lettered
            self._cost(event, ctx)
            return
        try:
            if event.topic == TASKS:
                self._task(event, ctx)
            elif event.topic == TELEMETRY:
                self._telemetry(event, ctx)
            elif event.topic == CONTROL:
                self._control(event, ctx)
            else:
                self._drill(event, ctx)
        except MeshError as exc:  # the topic's own processor dead-letters it
            self.skipped += 1
            _log.warning("kpis: skipped %s[%d]@%d: %s", event.topic, event.partition,
                         event.offset, exc)  # fmt: skip

    def punctuate(self, ctx: PunctuationContext[State]) -> None:
        """Drop buckets and task tracks older than a day (and a bucket)."""
        for key, state in list(ctx.items()):
            if isinstance(state, TaskTrack):
                old = state.at_ms
            else:
                parsed = parse_piece_key(key)
                if parsed is None or parsed[1] is None:
                    continue  # all time is kept
                old = parsed[1]
            if ctx.now_ms - old > _KEEP_MS:
                ctx.delete(key)

    # -- inputs ----------------------------------------------------------------------------

    def _task(self, event: Event, ctx: Context[State]) -> None:
        if event.subject != TASK_EVENT:
            return  # context writes say nothing the KPIs count
        event.message.verify(ctx.agents.public_key(event.envelope.sender))
        key = f"task|{event.body['task_id']}"
        at_ms = event.envelope.created_at_ms
        track, deltas = task_fact(self._track(ctx, key), event.body, at_ms)
        ctx.put(key, track)
        self._add(ctx, deltas, at_ms)

    def _cost(self, event: Event, ctx: Context[State]) -> None:
        record = self.serde.decode(event.value or b"").record
        key = f"task|{record['task_id']}"
        track, deltas = task_cost(self._track(ctx, key), float(record["cost_usd"]))
        ctx.put(key, track)
        self._add(ctx, deltas, int(record["at"]))

    def _telemetry(self, event: Event, ctx: Context[State]) -> None:
        envelope = event.envelope
        if event.subject != TELEMETRY_SUBJECT:
            return
        event.message.verify(ctx.agents.public_key(envelope.sender))
        at_ms = envelope.created_at_ms
        cost, deltas = telemetry_fact(envelope.sender, event.body)
        self._add(ctx, deltas, at_ms)
        if cost and envelope.task_id:
            record = {"task_id": envelope.task_id, "agent_id": envelope.sender,
                      "cost_usd": cost, "at": at_ms}  # fmt: skip
            ctx.emit(KPI_COSTS, envelope.task_id, TASK_COST, record)

    def _control(self, event: Event, ctx: Context[State]) -> None:
        opened = check_control(event.message, self.signers)
        self._add(ctx, control_fact(opened.body), opened.envelope.created_at_ms)

    def _drill(self, event: Event, ctx: Context[State]) -> None:
        sender = event.envelope.sender
        if event.subject != DRILL_SUBJECT or sender not in self.operators:
            raise MeshError(f"not a drill result signed by an operator (from {sender!r})")
        event.message.verify(self.signers[sender])
        self._add(ctx, drill_fact(event.body), int(event.body["at"]))

    # -- state -----------------------------------------------------------------------------

    @staticmethod
    def _track(ctx: Context[State], key: str) -> TaskTrack | None:
        found = ctx.get(key)
        return found if isinstance(found, TaskTrack) else None

    @staticmethod
    def _add(ctx: Context[State], deltas: list[Delta], at_ms: int) -> None:
        for scope, bucket, delta in placed(deltas, at_ms):
            key = piece_key(scope, bucket)
            held = ctx.get(key)
            ctx.put(key, (held if isinstance(held, Totals) else Totals()) + delta)

    def encode_state(self, state: State) -> dict[str, Any]:
        if isinstance(state, TaskTrack):
            task = {"workflow": state.workflow, "requested": state.requested,
                    "ended": state.ended, "handoffs": state.handoffs,
                    "pending_cost_usd": state.pending_cost_usd, "at": state.at_ms}  # fmt: skip
            return {"totals": None, "task": task}
        return {"totals": state.to_record(), "task": None}

    def decode_state(self, record: dict[str, Any]) -> State:
        task = record.get("task")
        if task is not None:
            return TaskTrack(task["workflow"], task["requested"], task["ended"],
                             task["handoffs"], task["pending_cost_usd"], task["at"])  # fmt: skip
        return Totals.from_record(record.get("totals") or {})
