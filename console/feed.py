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
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, Message

from console.views import (
    Filter,
    add_rates,
    agent_activity,
    agent_view,
    halt_reach,
    halt_view,
    kpi_panels,
    map_graph,
    map_shape,
    rows_to_redo,
    waiting_decisions,
)
from console.watch import SPEND_WINDOW_MS, TelemetryWatch
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
from mesh.domain.agents import AgentState
from mesh.domain.dependencies import capabilities
from mesh.domain.kpis import KpiView
from mesh.domain.topics import REGISTRY
from mesh.errors import MeshError, UnknownSenderError
from mesh.settings import Cluster

__all__ = ["Feed"]

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
        self._counted: dict[str, tuple[float, float]] = {}  # for rates: (when, count)
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
        self._thread = threading.Thread(
            target=self._retrying, args=(self._follow, "following the mesh"),
            name="console-feed", daemon=True,
        )  # fmt: skip
        # its own thread: the KPIs, approvals, dead letters and health take long enough to
        # read that a halt must not wait behind them
        self._slow_thread = threading.Thread(
            target=self._retrying, args=(self._follow_slow, "reading KPIs and approvals"),
            name="console-slow", daemon=True,
        )  # fmt: skip
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

    def _retrying(self, follow: Callable[[], None], what: str) -> None:
        """Run ``follow`` until the console stops; when the broker goes away, say so and
        start it again (both threads' loop)."""
        while not self._stop.is_set():
            try:
                follow()
            except MeshError as exc:
                _log.warning("console: %s failed (%s); retrying", what, exc)
                self._stop.wait(2.0)

    def _follow(self) -> None:
        table = _Tracked(self.cluster, self.codec.serde)
        halts = HaltTable(self.cluster, self.codec, self.signers)
        watch: TelemetryWatch | None = None
        try:
            table.catch_up()
            halts.catch_up()
            now_ms = int(time.time() * 1000)  # acknowledgements of a halt at most a day old
            oldest = max(min(halts.issued_at.values(), default=now_ms), now_ms - 86_400_000)
            since = min(oldest - 1000, now_ms - SPEND_WINDOW_MS)  # and the last minute's spend
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
            shapes = {k: map_shape(records[k], fresh[k]) for k in fresh}
            graph_changed = bool(gone) or any(self._shapes.get(k) != v for k, v in shapes.items())
            self._shapes.update(shapes)
            if graph_changed:  # not on a heartbeat: on an edge or a status
                self.graph = map_graph(records, self.agents)
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
        self._update("spend", watch.spent(int(time.time() * 1000)))

    def _halts(self, table: _Tracked, halts: HaltTable) -> None:
        """The halts view, redone (a halt, a resume or an acknowledgement arrived)."""
        self._update("halts", self._in_force(table, halts), at=int(time.time() * 1000))

    def _update(self, kind: str, value: Any, **extra: Any) -> None:
        """Keep ``value`` as the feed's ``kind`` (its attribute of that name); if it changed,
        push it whole to the pages as a ``kind`` event (with ``extra``)."""
        with self._lock:
            changed = value != getattr(self, kind)
            setattr(self, kind, value)
        if changed:
            self._publish({"type": kind, kind: value, **extra})

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
        self._update("kpis", kpi_panels(view, now_ms))
        self._update("activity", agent_activity(view, now_ms))
        self._update("escalations", waiting_decisions(log, now_ms))

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
            if self.processor_metrics:
                status["processor_metrics"] = processor_metrics(self.processor_metrics)
            add_rates(status, self._counted, self._health_at)
        self._update("dead_letters", letters)
        if status is not None:
            self._update("health", status)


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


def _registered_key(table: _Tracked) -> Callable[[str], bytes]:
    def key_for(agent_id: str) -> bytes:
        state = table.values.get(agent_id)
        if state is None:
            raise UnknownSenderError(f"{agent_id!r} is not in the registry")
        return state.public_key

    return key_for
