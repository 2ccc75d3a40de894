"""What the console shows, kept current from Kafka and pushed to every open page.

The feed thread follows the registry (``mesh.registry.v1``) and the control topic with the
same tables the processors use (:mod:`mesh.adapters.kafka.table`), waiting on the control
topic so a halt wakes it, and telemetry (:class:`console.watch.TelemetryWatch`: who
acknowledged each halt in force, each agent's spend over the last minute). A second thread
follows the KPI totals (``mesh.kpis.v1``) and the approvals topic (escalations and approvals
waiting for a person) every few seconds, the newest dead letters when they move, and every
ten seconds the mesh's health (:mod:`mesh.adapters.health`, each processor's throughput
worked out from two reads of its committed offsets): those reads never hold a halt up.
Each change becomes an event (``agents``: the records that changed or went; ``halts``,
``spend``, ``kpis``, ``escalations``, ``dead_letters``, ``health``: the whole of it), handed
to every subscriber's queue on the server's event loop. A page gets the whole state first
(:meth:`Feed.snapshot`), then the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message

from console.watch import SPEND_WINDOW_MS, TelemetryWatch
from mesh.adapters.acks import Ack, live_targets
from mesh.adapters.approvals import ApprovalFollower, ApprovalLog
from mesh.adapters.health import dead_letter_ends, dead_letters, health, processor_metrics
from mesh.adapters.kafka.halts import HaltTable
from mesh.adapters.kafka.reading import reader
from mesh.adapters.kafka.table import Table
from mesh.adapters.kpis import KpiPieces
from mesh.adapters.metrics import Family, counters
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agent_record import from_record
from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.control import CHAIN_PREFIX
from mesh.domain.dependencies import capabilities, dependency_graph, render
from mesh.domain.gates import PRODUCTION, certified_for_production
from mesh.domain.kpis import BUCKET_MS, FLEET, KpiView, Totals, figures
from mesh.domain.topics import REGISTRY
from mesh.errors import MeshError, UnknownSenderError
from mesh.settings import Cluster

__all__ = ["Feed", "Filter"]

Event = dict[str, Any]
_log = logging.getLogger("mesh.console")


class Feed:
    def __init__(
        self,
        cluster: Cluster,
        codec: MessageCodec,
        signers: Mapping[str, bytes],
        every_s: float = 0.05,
        slow_every_s: float = 3.0,
        health_every_s: float = 10.0,
        processor_metrics: Sequence[str] = (),
    ) -> None:
        """``processor_metrics``: the processors' ``/metrics`` URLs (`mesh up` gives its
        own), read with the health for each processor's restores, restarts and readiness."""
        self.cluster, self.codec, self.signers = cluster, codec, dict(signers)
        self.processor_metrics = tuple(processor_metrics)
        self.every_s, self.slow_every_s = every_s, slow_every_s
        self.health_every_s, self._health_at = health_every_s, -health_every_s
        self._committed: dict[str, tuple[float, int]] = {}  # processor -> (when, offsets)
        self._dead_ends: tuple[int, ...] | None = None
        self.agents: dict[str, dict[str, Any]] = {}
        self.halts: list[dict[str, Any]] = []
        self.kpis: list[dict[str, Any]] = []
        self.escalations: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []
        self.activity: dict[str, dict[str, float]] = {}  # agent -> spend, messages, errors
        self.health: dict[str, Any] = {}
        self.graph: dict[str, Any] = {"nodes": [], "edges": []}
        self._shapes: dict[str, object] = {}  # per agent, what the graph was drawn from
        self.ready = threading.Event()
        self._subscribers: dict[asyncio.Queue[Event], Filter] = {}
        self.published = 0  # events handed to pages
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._slow_thread = threading.Thread(target=self._run_slow, name="console-slow",
                                             daemon=True)  # fmt: skip
        self._watch: TelemetryWatch | None = None
        self._table: _Tracked | None = None
        self.spend: dict[str, float] = {}  # agent -> spend over the last minute
        self._spend_at = 0.0

    # -- the server's side -------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()
        self._slow_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._slow_thread.join(timeout=10)

    def subscribe(self, wanted: Filter | None = None) -> asyncio.Queue[Event]:
        """A queue of the changes; agents only those ``wanted`` matches (server-side filter:
        a page over 10,000 agents gets the ones it asked for)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=200)
        self._subscribers[queue] = wanted or Filter()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.pop(queue, None)

    def snapshot(self, wanted: Filter | None = None) -> Event:
        wanted = wanted or Filter()
        with self._lock:
            matching = sorted(
                (a for a in self.agents.values() if wanted.matches(a)),
                key=lambda a: a["agent_id"],
            )
            return {
                "type": "snapshot",
                "agents": matching[: wanted.limit],
                "matching": len(matching),
                "total": len(self.agents),
                "halts": self.halts,
                "graph": self.graph,
                "kpis": self.kpis,
                "escalations": self.escalations,
                "dead_letters": self.dead_letters,
                "activity": self.activity,
                "spend": self.spend,
                "health": self.health,
            }

    def registry(self) -> dict[str, AgentState] | None:
        """The registry as the feed follows it (a copy), to check a command against without
        reading the topic again; None until the feed has caught up."""
        table = self._table
        if table is None or not self.ready.is_set():
            return None
        return dict(table.values)  # one C-level copy: the feed thread cannot change it midway

    def families(self) -> list[Family]:
        """The console's Prometheus metrics."""
        with self._lock:
            statuses = Counter(a["status"] for a in self.agents.values())
            halts, waiting = len(self.halts), len(self.escalations)
        return [
            counters("mesh_console_agents", "Agents in the registry, by status.", "status",
                     dict(statuses), kind="gauge"),
            Family("mesh_console_halts_in_force", "gauge", "Halts in force.",
                   samples=[((), float(halts))]),
            Family("mesh_console_decisions_waiting", "gauge", "Escalations and approvals "
                   "waiting for a person.", samples=[((), float(waiting))]),
            Family("mesh_console_streams", "gauge", "Pages connected to the live stream.",
                   samples=[((), float(len(self._subscribers)))]),
            Family("mesh_console_events", "counter", "Changes pushed to the pages.",
                   samples=[((), float(self.published))]),
        ]  # fmt: skip

    def _publish(self, event: Event) -> None:
        loop = self._loop
        if loop is None:
            return
        self.published += 1
        for queue, wanted in list(self._subscribers.items()):
            sent = event
            if event["type"] == "agents" and wanted.words:
                sent = {**event, "upsert": [a for a in event["upsert"] if wanted.matches(a)]}
                if not sent["upsert"] and not sent["remove"]:
                    continue
            loop.call_soon_threadsafe(_offer, queue, sent)

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except MeshError as exc:  # the broker went away: say so, start again
                _log.warning("console: following the mesh failed (%s); retrying", exc)
                self._stop.wait(2.0)

    def _follow(self) -> None:
        table = _Tracked(self.cluster, self.codec.serde)
        halts = HaltTable(self.cluster, self.codec, self.signers)
        watch: TelemetryWatch | None = None
        try:
            table.catch_up()
            halts.catch_up()
            now_ms = int(time.time() * 1000)  # acknowledgements of a halt at most a day old
            since = max(min(halts.issued_at.values(), default=now_ms), now_ms - 86_400_000)
            since = min(since, now_ms - SPEND_WINDOW_MS)  # and the last minute's spend
            watch = TelemetryWatch(self.cluster, self.codec, _registered_key(table), since)
            watch.catch_up()
            self._watch = watch
            self._table = table
            self._halts(table, halts)
            self._refresh(table, halts, table.drain(), everyone=True)
            self.ready.set()
            while not self._stop.is_set():
                # halts first: what an operator waits for is never queued behind heartbeats;
                # with nothing to do, the wait is on the control topic (a halt wakes it)
                before = dict(halts.halts)
                if halts.poll(wait_s=self.every_s):  # pushed before the rows are redone
                    self._halts(table, halts)
                    touched = rows_to_redo(before, halts.halts)
                    everyone = touched is None
                    self._refresh(table, halts, table.drain() | (touched or set()), everyone)
                if table.poll(max_records=500):  # small bites: back to the halts soon
                    self._refresh(table, halts, table.drain(), everyone=False)
                acknowledged = watch.acknowledged
                watch.poll(max_records=500)
                if watch.acknowledged != acknowledged:
                    self._halts(table, halts)
                self._spend(watch)
        finally:
            self._table = None
            table.close()
            halts.close()
            if watch is not None:
                watch.close()

    def _refresh(self, table: _Tracked, halts: HaltTable, keys: set[str], everyone: bool) -> None:
        """Redo the rows of the agents in ``keys`` (those that changed, and those a halt or a
        resume reached) or of ``everyone`` (a fleet or capability halt came or went), and the
        dependency map if an edge or a status did."""
        records = table.values
        now_ms = int(time.time() * 1000)
        todo = set(records) | set(self.agents) if everyone else keys
        fresh: dict[str, dict[str, Any]] = {}
        for agent_id in todo:
            state = records.get(agent_id)
            if state is not None:
                halt = halts.book.halt_for(agent_id, capabilities(state))
                fresh[agent_id] = agent_view(state, halt, now_ms)
        with self._lock:
            changed = [v for k, v in fresh.items() if self.agents.get(k) != v]
            gone = [k for k in todo if k in self.agents and k not in records]
            for agent_id in gone:
                del self.agents[agent_id]
                self._shapes.pop(agent_id, None)
            self.agents.update(fresh)
            shapes = {k: _shape(records[k], fresh[k]) for k in fresh}
            graph_changed = bool(gone) or any(self._shapes.get(k) != v for k, v in shapes.items())
            self._shapes.update(shapes)
            if graph_changed:  # not on a heartbeat: on an edge or a status
                self.graph = _graph(records, self.agents)
            total = len(self.agents)
        if changed or gone:
            self._publish({"type": "agents", "upsert": changed, "remove": gone, "total": total})
        if graph_changed:
            self._publish({"type": "graph", "graph": self.graph})

    def _in_force(self, table: _Tracked, halts: HaltTable) -> list[dict[str, Any]]:
        by_command = self._watch.acks if self._watch is not None else {}
        views = []
        for key, command in sorted(halts.halts.items()):
            command_id = str(command["command_id"])
            acks = by_command.get(command_id, {})
            reach = halt_reach(table.values, command)
            views.append(halt_view(key, command, halts.issued_at.get(command_id), acks, reach))
        return views

    def _spend(self, watch: TelemetryWatch) -> None:
        """Each agent's spend over the last minute, pushed once a second when it changed."""
        if time.monotonic() - self._spend_at < 1.0:
            return
        self._spend_at = time.monotonic()
        spent = watch.spent(int(time.time() * 1000))
        with self._lock:
            changed, self.spend = spent != self.spend, spent
        if changed:
            self._publish({"type": "spend", "spend": spent})

    def _halts(self, table: _Tracked, halts: HaltTable) -> None:
        """The halts view, redone (a halt, a resume or an acknowledgement arrived)."""
        in_force = self._in_force(table, halts)
        with self._lock:
            changed, self.halts = in_force != self.halts, in_force
        if changed:
            self._publish({"type": "halts", "halts": in_force, "at": int(time.time() * 1000)})

    def _run_slow(self) -> None:
        """Its own thread: the KPIs, approvals, dead letters and health take long enough to
        read that a halt must not wait behind them."""
        while not self._stop.is_set():
            try:
                self._follow_slow()
            except MeshError as exc:  # the broker went away: say so, start again
                _log.warning("console: KPIs or approvals unreadable (%s); retrying", exc)
                self._stop.wait(2.0)

    def _follow_slow(self) -> None:
        """The KPI pieces and the approvals (with the key directory) followed, not read whole
        again every few seconds: a reader's start is what costs."""
        kpis = KpiPieces(self.cluster, self.codec.serde)
        try:
            approvals = ApprovalFollower(self.cluster, self.codec, self.signers)
        except MeshError:
            kpis.close()
            raise
        letters = reader(self.cluster)  # the dead letters, re-read when their ends move
        try:
            kpis.catch_up()
            approvals.catch_up()
            while not self._stop.is_set():
                kpis.poll(max_records=10_000)
                approvals.poll()
                self._slow(kpis.view(), approvals.log)
                self._operations(letters)
                self._stop.wait(self.slow_every_s)
        finally:
            kpis.close()
            approvals.close()
            letters.close()

    def _slow(self, view: KpiView, log: ApprovalLog) -> None:
        """The KPI panels, each agent's activity and the decisions waiting for a person."""
        now_ms = int(time.time() * 1000)
        scopes = [FLEET] + [s for s in view.scopes() if s.startswith("workflow:")]
        kpis = [
            {"scope": s, "window": w, **figures(view.window(s, w, now_ms))}
            for s in scopes
            for w in ("1h", "all")
        ]
        kpis.append({"scope": FLEET, "window": "buckets", "series": _series(view, now_ms)})
        activity = _activity(view, now_ms)
        waiting = [
            {"request_id": r.request_id, "agent_id": r.agent_id, "escalation": r.is_escalation,
             "tool": r.tool, "arguments": r.arguments_json, "asked_at": r.requested_at_ms}
            for r in log.book.requests.values() if r.state(now_ms) == "pending"
        ]  # fmt: skip
        with self._lock:
            kpis_changed, waiting_changed = kpis != self.kpis, waiting != self.escalations
            activity_changed = activity != self.activity
            self.kpis, self.escalations, self.activity = kpis, waiting, activity
        if kpis_changed:
            self._publish({"type": "kpis", "kpis": kpis})
        if activity_changed:
            self._publish({"type": "activity", "activity": activity})
        if waiting_changed:
            self._publish({"type": "escalations", "escalations": waiting})

    def _operations(self, consumer: Consumer) -> None:
        """The newest dead letters (read again only when one arrived); the mesh's health
        every ``health_every_s`` (it asks the broker for every processor group's offsets and
        members: not every few seconds)."""
        try:
            ends = dead_letter_ends(self.cluster, consumer)
            letters = self.dead_letters
            if ends != self._dead_ends:
                letters = dead_letters(self.cluster, self.codec, consumer=consumer)
                self._dead_ends = ends
            due = time.monotonic() - self._health_at >= self.health_every_s
            status = health(self.cluster, self.codec, self.signers) if due else None
        except MeshError as exc:
            _log.warning("console: dead letters or health unreadable: %s", exc)
            return
        if status is not None:
            self._health_at = time.monotonic()
            _throughput(status.get("processors") or {}, self._committed, self._health_at)
            if self.processor_metrics:
                status["processor_metrics"] = processor_metrics(self.processor_metrics)
        with self._lock:
            letters_changed = letters != self.dead_letters
            health_changed = status is not None and status != self.health
            self.dead_letters = letters
            if status is not None:
                self.health = status
        if letters_changed:
            self._publish({"type": "dead_letters", "dead_letters": letters})
        if health_changed:
            self._publish({"type": "health", "health": status})


def _throughput(
    processors: Mapping[str, dict[str, Any]], before: dict[str, tuple[float, int]], now: float
) -> None:
    """Each processor group's committed offsets per second since the last read (transaction
    markers included: an offset is a record or a commit's marker)."""
    for name, group in processors.items():
        committed = group.get("committed")
        if committed is None:
            continue
        if name in before and now > before[name][0]:
            then, was = before[name]
            group["offsets_per_s"] = round(max(0, committed - was) / (now - then), 1)
        before[name] = (now, committed)


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


class _Tracked(Table[AgentState]):
    """The registry table, remembering which agents changed since the last :meth:`drain`."""

    def __init__(self, cluster: Cluster, serde: Serde) -> None:
        self.changed: set[str] = set()
        super().__init__(
            cluster, cluster.topic(REGISTRY), lambda v: from_record(serde.decode(v).record)
        )

    def _fold(self, message: Message) -> None:
        super()._fold(message)
        if message.key() is not None:
            self.changed.add((message.key() or b"").decode(errors="replace"))

    def drain(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed


def _offer(queue: asyncio.Queue[Event], event: Event) -> None:
    with contextlib.suppress(asyncio.QueueFull):  # a page that stopped reading misses events
        queue.put_nowait(event)


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


def _registered_key(table: _Tracked) -> Callable[[str], bytes]:
    def key_for(agent_id: str) -> bytes:
        state = table.values.get(agent_id)
        if state is None:
            raise UnknownSenderError(f"{agent_id!r} is not in the registry")
        return state.public_key

    return key_for


def _shape(agent: AgentState, view: Mapping[str, Any]) -> object:
    """What the dependency map draws of an agent: status, halt, edges (not heartbeats)."""
    return (agent.status, bool(view["halted_by"]), agent.depends_on_agents,
            agent.depends_on_tools, agent.observed_agents, agent.observed_tools)  # fmt: skip


def _graph(
    records: Mapping[str, AgentState], views: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(render(dependency_graph(records), "json"))
    for node in graph["nodes"]:
        view = views.get(node["id"])
        node["halted"] = bool(view and view["halted_by"])
    return graph


def _activity(view: KpiView, now_ms: int) -> dict[str, dict[str, float]]:
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


def _series(view: Any, now_ms: int) -> dict[str, list[float]]:
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
