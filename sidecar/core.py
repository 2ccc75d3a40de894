"""The sidecar: one agent's attachment to the mesh, on asyncio and aiokafka.

It owns the agent's identity (an Ed25519 key in the state directory, owner-only), registers
the agent with its card, dependencies and policy, heartbeats, and deregisters (retires) on a
clean stop. Everything the agent does passes through here:

* **Outgoing** (``send``, ``report_*``, ``task_event``, ``write_context``): refused while the
  agent is halted; checked against the agent's policy and the schema; stamped (ids, causation,
  hop count, trace context); signed; produced idempotently and awaited, so a call that returns
  was written and a call that raises wrote nothing. A refusal is reported on telemetry as
  ``SEND_REFUSED``.
* **Incoming**: the inbox is consumed with the agent's consumer group (replicas share it);
  each record is decoded and its signature verified against the sender's registered key before
  the agent sees it; duplicates (same message id) are dropped; order per task is the inbox
  partition's order. Whatever fails goes to ``mesh.dlq.v1`` with the reason and the original
  bytes; an offset is committed only once the agent has taken the message (or it was
  dead-lettered), so a crash redelivers rather than loses, and the de-duplication hides it.
* **Halts**: the control topic is followed from the beginning, so a halt issued while the
  sidecar was down applies before it does anything. Once halted, every send and report raises
  HaltedError("halted by RULE: REASON"); the halt is acknowledged on telemetry (``HALT_ACK``)
  and handed to the agent's halt handlers. A resume restores service and is acknowledged too
  (``RESUME_ACK``); the registry shows the agent HALTED between the two.
* **Fail closed**: while the sidecar cannot show it is up to date with the control topic, it
  refuses every send and report (:mod:`sidecar.halts`).

This class is the facade; the parts are small modules, each unit-tested with no broker:
:mod:`sidecar.routing` (where a send goes, how it is stamped), :mod:`sidecar.outbox` (sealing
and writing), :mod:`sidecar.inbox` (verification, de-duplication, commits),
:mod:`sidecar.halts` (halts in force and whether control can be trusted),
:mod:`sidecar.telemetry`, :mod:`sidecar.follow` (the registry and control follower) and
:mod:`sidecar.supervise` (every background loop restarted, logged and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import aiokafka_consumer_config, aiokafka_producer_config
from mesh.adapters.keyfiles import control_signers, load_or_create_key
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.control import open_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agent_record import from_record
from mesh.domain.agents import AgentState, registered_key
from mesh.domain.dependencies import capabilities
from mesh.domain.envelope import Envelope
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import CONTROL, REGISTRY, REGISTRY_EVENTS, TASKS, inbox_topic
from mesh.errors import (
    AgentRefusedError,
    KafkaUnavailableError,
    MeshError,
    PolicyViolationError,
    ProcessorError,
    SerdeError,
    TopicNotFoundError,
    UnknownSenderError,
)
from mesh.settings import Settings
from sidecar.context import read_task_state
from sidecar.delivery import Delivery, message_body
from sidecar.follow import Follower
from sidecar.halts import ControlView
from sidecar.inbox import Counters, Inbox, Position
from sidecar.outbox import KafkaSink, Outbox
from sidecar.policy import SpendWindow
from sidecar.routing import route, stamp
from sidecar.spec import AgentSpec
from sidecar.supervise import Supervisor
from sidecar.telemetry import Kind

__all__ = ["MESSAGE_SUBJECT", "Delivery", "Sidecar", "message_body"]

MESSAGE_SUBJECT = "mesh.a2a.Message"
HaltHandler = Callable[[dict[str, Any] | None], Awaitable[None] | None]

_log = logging.getLogger("mesh.sidecar")


class Sidecar:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        serde: Serde,
        spec: AgentSpec,
        *,
        key: AgentKey | None = None,
        instance_id: str | None = None,
        heartbeat_s: float = 5.0,
        key_wait_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.bootstrap, self.serde, self.spec = settings, bootstrap, serde, spec
        self.agent_id = spec.agent_id
        self.key = key or load_or_create_key(
            settings.state_dir / "keys" / f"{spec.agent_id}.key", spec.agent_id
        )
        self.instance_id = instance_id or f"{spec.agent_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_s, self.key_wait_s, self.clock = heartbeat_s, key_wait_s, clock
        self.codec = MessageCodec(serde, PublicKeys(), max_bytes=settings.max_message_bytes)
        self.spend = SpendWindow(spec.policy)
        self.counters = Counters()
        self.control = ControlView(spec.agent_id, settings.control_stale_ms / 1000)
        self.supervisor = Supervisor(spec.agent_id)
        self.follower: Follower | None = None
        self._prefix = settings.topic_prefix
        self._sink = KafkaSink(aiokafka_producer_config(settings, bootstrap))
        self.outbox = Outbox(self.agent_id, self.key, self.codec, self._prefix, self._sink)
        self.inbox = Inbox(
            self.codec, self._sender_key, self.outbox, f"sidecar:{self.instance_id}", self.counters
        )
        self._halt_handlers: list[HaltHandler] = []
        self._agents: dict[str, AgentState] = {}
        self._registry_changed = asyncio.Event()
        self._signers = control_signers(settings)
        self._inbox_consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[str, int] = {}
        self._heartbeats = 0
        self._registered = False
        self._applying: set[asyncio.Task[None]] = set()
        self.started = False

    @property
    def halt(self) -> dict[str, Any] | None:
        """The halt in force for this agent (None: it may act, if control is followed)."""
        return self.control.applied

    def healthy(self) -> bool:
        """Control is followed and current (see sidecar.halts); false: the agent may not act."""
        return self.started and self.control.healthy(time.monotonic())

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Attach: registry and control followed and caught up, registered, inbox consumed,
        heartbeating. Idempotent."""
        if self.started:
            return
        try:
            await self._start()
        except BaseException:
            await self.stop(deregister=False)
            raise

    async def _start(self) -> None:
        self._partitions = await asyncio.to_thread(self._ensure_inbox)
        await self._sink.start()
        self.supervisor.spawn("control follower", self._follow, self.control.follower_stopped)
        await self._wait_for_control()
        # Registered before the halt in force is applied, so that its acknowledgement is about
        # a known agent; the agent cannot act before start() returns either way.
        registration = self.spec.registration(self.key.public_bytes)
        await self._write_event(REGISTRY_EVENTS, "mesh.registry.AgentRegistered", registration)
        self._registered = True
        await self._apply_halt_state()
        group = f"{self._prefix}agent.{self.agent_id}"
        self._inbox_consumer = AIOKafkaConsumer(
            f"{self._prefix}{inbox_topic(self.agent_id).name}",
            **aiokafka_consumer_config(self.settings, self.bootstrap, group),
        )
        await self._inbox_consumer.start()
        self.supervisor.spawn("inbox", self._consume_inbox)
        self.supervisor.spawn("heartbeat", self._heartbeat)
        self.supervisor.spawn("commits", self._commit_loop)
        self.started = True

    async def stop(self, *, deregister: bool = True) -> None:
        """Detach; a clean stop retires the agent from the registry (``deregister``).
        Idempotent."""
        await self.supervisor.stop()
        if self._inbox_consumer is not None:
            with contextlib.suppress(KafkaError, KafkaUnavailableError):
                await self._commit()  # what was not committed is redelivered: at least once
            await self._inbox_consumer.stop()
            self._inbox_consumer = None
        if deregister and self.started:
            retired = {"agent_id": self.agent_id, "reason": "sidecar stopped cleanly"}
            await self._write_event(REGISTRY_EVENTS, "mesh.registry.AgentRetired", retired)
        await self._sink.stop()
        self._registered = False
        self.started = False

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def on_halt(self, handler: HaltHandler) -> None:
        """Call ``handler(halt)`` when the agent is halted, and ``handler(None)`` on resume."""
        self._halt_handlers.append(handler)

    # -- outgoing --------------------------------------------------------------------------

    async def send(
        self,
        to: str | None = None,
        body: Mapping[str, Any] | None = None,
        *,
        capability: str | None = None,
        task_id: str | None = None,
        reply_to: Delivery | str | None = None,
        subject: str = MESSAGE_SUBJECT,
        text: str | None = None,
        data: Any = None,
    ) -> str:
        """Send to an agent (``to``) or to an agent with ``capability``; returns the message id.

        ``reply_to`` (a Delivery or a delivered message id) makes this message caused by that
        one: same conversation, task and correlation, one hop further.
        """
        if body is None:
            body = message_body(text, data)
        try:
            self._refuse_if_halted()
            policy = self.spec.policy
            recipient = route(self._agents, self.control.book, policy, to, capability, task_id)
            envelope = stamp(self.agent_id, recipient, task_id, self._cause(reply_to))
            self.spec.policy.check_hops(envelope.hop_count)
            self.serde.validate(subject, body)
            value = self.outbox.message(envelope, subject, body)
            self.spec.policy.check_size(len(value))
        except (AgentRefusedError, SerdeError) as exc:
            await self._refused("send", exc, peer=to or capability)
            raise
        topic = f"{self._prefix}{inbox_topic(recipient).name}"
        key = (envelope.task_id or envelope.conversation_id).encode()
        sent = self.outbox.telemetry(Kind.MESSAGE_SENT, subject, peer=recipient, about=envelope)
        await self.outbox.write((topic, key, value), sent)
        self.counters.sent += 1
        return envelope.message_id

    async def report_tool_call(
        self,
        tool: str,
        arguments: Any = None,
        *,
        cost_usd: float = 0.0,
        latency_ms: float = 0.0,
        ok: bool = True,
        detail: str | None = None,
    ) -> None:
        """Report a tool call (refused if the tool or the spend is outside the policy)."""
        digest = hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).hexdigest()
        await self._report(
            Kind.TOOL_CALL,
            tool,
            cost_usd,
            check_tool=True,
            arguments_digest=digest,
            latency_ms=latency_ms,
            ok=ok,
            detail=detail,
        )

    async def report_model_call(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        latency_ms: float = 0.0,
    ) -> None:
        await self._report(
            Kind.MODEL_CALL,
            model,
            cost_usd,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
        )

    async def report_error(self, name: str, detail: str) -> None:
        await self._report(Kind.ERROR, name, 0.0, ok=False, detail=detail)

    async def task_event(
        self,
        task_id: str,
        kind: str,
        *,
        target: str | None = None,
        capability: str | None = None,
        summary: str | None = None,
        artifact_uris: tuple[str, ...] = (),
        value_usd: float | None = None,
    ) -> None:
        """Record a step of a task (REQUESTED, ASSIGNED, HANDED_OFF, COMPLETED, ...)."""
        self._refuse_if_halted()
        await self._write_event(
            TASKS,
            "mesh.tasks.TaskEvent",
            {
                "task_id": task_id,
                "kind": kind,
                "actor": self.agent_id,
                "target": target,
                "capability": capability,
                "summary": summary,
                "artifact_uris": list(artifact_uris),
                "value_usd": value_usd,
            },
            key=task_id,
        )

    async def write_context(
        self, task_id: str, key: str, value: Any, expected_version: int = 0
    ) -> None:
        """Write one key of the task's shared context; ``expected_version`` is the version
        read (0: the key must be new). A stale write is refused by the state processor."""
        self._refuse_if_halted()
        await self._write_event(
            TASKS,
            "mesh.tasks.ContextWrite",
            {
                "task_id": task_id,
                "key": key,
                "value_json": orjson.dumps(value).decode(),
                "expected_version": expected_version,
            },
            key=task_id,
        )

    async def context(self, task_id: str) -> dict[str, Any] | None:
        """The task's shared context as the state projections hold it (None: unknown task)."""
        return await read_task_state(self.settings, self.bootstrap, self.serde, task_id)

    # -- incoming --------------------------------------------------------------------------

    async def receive(self, timeout_s: float | None = None) -> Delivery | None:
        """The next verified message (None on timeout). Taking it marks it for commit."""
        return await self.inbox.receive(timeout_s)

    def delivered(self, message_id: str) -> Envelope | None:
        """The envelope of a recently delivered message (to reply to it by id)."""
        return self.inbox.recent.get(message_id)

    def agents(self) -> dict[str, AgentState]:
        return dict(self._agents)

    # -- internals: outgoing ---------------------------------------------------------------

    def _refuse_if_halted(self) -> None:
        """Fail closed: raise unless control is followed and no halt is in force."""
        if not self._registered:
            raise ProcessorError(f"the sidecar of {self.agent_id!r} is not started")
        self.control.check(time.monotonic())

    def _cause(self, reply_to: Delivery | str | None) -> Envelope | None:
        if isinstance(reply_to, Delivery):
            return reply_to.envelope
        if reply_to is None:
            return None
        cause = self.inbox.recent.get(reply_to)
        if cause is None:
            raise PolicyViolationError(
                "unknown_cause", f"no recently delivered message {reply_to!r} to reply to"
            )
        return cause

    async def _report(
        self, kind: Kind, name: str, cost_usd: float, *, check_tool: bool = False, **fields: Any
    ) -> None:
        try:
            self._refuse_if_halted()
            if check_tool:
                self.spec.policy.check_tool(name)
            if cost_usd < 0:
                raise PolicyViolationError("bad_cost", f"cost_usd must be >= 0, not {cost_usd}")
            self.spend.admit(cost_usd, self.clock())
        except AgentRefusedError as exc:
            await self._refused(name, exc)
            raise
        self.counters.spend_usd += cost_usd
        await self.outbox.write(self.outbox.telemetry(kind, name, cost_usd=cost_usd, **fields))

    async def _refused(self, what: str, exc: MeshError, peer: str | None = None) -> None:
        self.counters.refused += 1
        detail = f"{getattr(exc, 'rule', exc.code)}: {exc}"
        refused = self.outbox.telemetry(Kind.SEND_REFUSED, what, peer=peer, ok=False, detail=detail)
        await self.outbox.write(refused)

    async def _write_event(
        self, topic: str, subject: str, body: Mapping[str, Any], key: str | None = None
    ) -> None:
        await self.outbox.write(self.outbox.event(topic, subject, body, key))

    # -- internals: incoming ---------------------------------------------------------------

    def _ensure_inbox(self) -> dict[str, int]:
        """Create the inbox if need be; return the partition count of the topics followed."""
        admin = TopicAdmin(self.settings, self.bootstrap)
        admin.ensure([inbox_topic(self.agent_id)])
        live = admin.topic_partitions()
        followed = [f"{self._prefix}{REGISTRY}", f"{self._prefix}{CONTROL}"]
        missing = [topic for topic in followed if not live.get(topic)]
        if missing:
            raise TopicNotFoundError(
                f"topic {missing[0]} does not exist; run `mesh topics ensure` (or `mesh up`)"
            )
        return {topic: live[topic] for topic in followed}

    async def _consume_inbox(self) -> None:
        consumer = self._inbox_consumer
        if consumer is None:
            raise ProcessorError(f"the inbox of {self.agent_id!r} is not open")
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=200)
            for tp, records in batches.items():
                at = Position(tp.topic, tp.partition)
                for record in records:
                    await self.inbox.admit(at, record.offset, record.key, record.value or b"")

    async def _sender_key(self, sender: str) -> bytes:
        """The sender's registered key; waits up to ``key_wait_s`` for a fresh registration."""
        deadline = time.monotonic() + self.key_wait_s
        while True:
            try:
                return registered_key(self._agents, sender)
            except UnknownSenderError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
            self._registry_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._registry_changed.wait(), remaining)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._commit()

    async def _commit(self) -> None:
        due = self.inbox.due()
        if due and self._inbox_consumer is not None:
            offsets = {
                TopicPartition(at.topic, at.partition): OffsetAndMetadata(o, "")
                for at, o in due.items()
            }
            await self._inbox_consumer.commit(offsets)
            self.inbox.committed(due)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self._heartbeats += 1
            beat = {
                "agent_id": self.agent_id,
                "instance_id": self.instance_id,
                "sequence": self._heartbeats,
            }
            await self._write_event(REGISTRY_EVENTS, "mesh.registry.Heartbeat", beat)

    # -- internals: followers --------------------------------------------------------------

    async def _follow(self) -> None:
        """Follow the registry and the control topic (one consumer) until cancelled; a new
        follower after a failure re-reads both from their beginning (folding is idempotent)."""
        topics = {
            f"{self._prefix}{REGISTRY}": self._on_agent,
            f"{self._prefix}{CONTROL}": self._on_control,
        }
        confirm_every_s = max(0.1, self.control.stale_after_s / 5)
        follower = Follower(
            self.settings,
            self.bootstrap,
            topics,
            self._partitions,
            self.control.confirmed,
            confirm_every_s,
        )
        self.follower = follower
        try:
            await follower.run(await follower.start())
        finally:
            await follower.stop()

    async def _wait_for_control(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.control.confirmed_at is None:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"the sidecar of {self.agent_id!r} could not read the registry and the "
                    f"control topic within {timeout_s:.0f}s; is the broker up?"
                )
            await asyncio.sleep(0.01)

    def _on_agent(self, record: ConsumerRecord) -> None:
        agent_id = (record.key or b"").decode()
        if record.value is None:
            self._agents.pop(agent_id, None)
        else:
            try:
                self._agents[agent_id] = from_record(self.serde.decode(record.value).record)
            except MeshError as exc:
                self.counters.undecodable_agents += 1
                _log.warning(
                    "%s: skipped the registry record at %s[%d]@%d: %s",
                    self.agent_id, record.topic, record.partition, record.offset, exc,
                )  # fmt: skip
                return
        self._registry_changed.set()

    def _on_control(self, record: ConsumerRecord) -> None:
        """Fold a halt or resume signed by a control signer; ignore anything else (the
        kill-switch dead-letters it, once, with the reason)."""
        if record.value is None:
            return  # a tombstone lifts nothing (see HaltBook.apply)
        try:
            opened = open_control(self.codec, record.value, self._signers)
        except MeshError as exc:
            self.counters.untrusted_controls += 1
            _log.warning(
                "%s: ignored the control record at %s[%d]@%d: %s",
                self.agent_id, record.topic, record.partition, record.offset, exc,
            )  # fmt: skip
            return
        self.control.fold((record.key or b"").decode(), opened.body)
        if self._registered:  # from registration on, every change is applied as it arrives
            self._apply_soon()

    def _apply_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._apply_halt_state())
        self._applying.add(task)
        task.add_done_callback(self._applied)

    def _applied(self, task: asyncio.Task[None]) -> None:
        self._applying.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters.apply_failures += 1
            _log.error("%s: applying a halt change failed: %r", self.agent_id, task.exception())

    async def _apply_halt_state(self) -> None:
        mine = capabilities(self._agents.get(self.agent_id)) or list(self.spec.capabilities)
        change = self.control.change(mine)
        if change is None:
            return
        halt = change.halt
        if halt is not None:
            produced = halt.get("trigger_produced_at")
            if produced and self.started:
                self.counters.halt_latencies_ms.append(self.clock() * 1000 - produced)
            detail = f"{halt['command_id']}: {halt['reason']}"
            await self.outbox.write(
                self.outbox.telemetry(Kind.HALT_ACK, halt["rule"], detail=detail)
            )
        else:
            self.spend = SpendWindow(self.spec.policy)
            await self.outbox.write(self.outbox.telemetry(Kind.RESUME_ACK, "resume"))
        for handler in self._halt_handlers:
            result = handler(halt)
            if result is not None:
                await result
