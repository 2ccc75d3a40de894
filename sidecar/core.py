"""The sidecar: one agent's attachment to the mesh, on asyncio and aiokafka (a facade).

It owns the agent's identity (an Ed25519 key in the state directory, owner-only), registers
the agent with its card, dependencies and policy, heartbeats, and retires it on a clean stop.
Everything the agent does passes through here:

* **Outgoing** (``send``, ``report_*``, ``task_event``, ``write_context``): refused unless the
  sidecar may act (:mod:`sidecar.halts`: not halted, and control followed: it **fails
  closed**); checked against the policy and the schema; routed and stamped
  (:mod:`sidecar.routing`); signed and written, awaited (:mod:`sidecar.outbox`): a call that
  returns was written. A refusal is reported on telemetry as ``SEND_REFUSED``.
* **Incoming**: the inbox, verified, de-duplicated and delivered at least once
  (:mod:`sidecar.inbox`, :mod:`sidecar.consume`).
* **Halts**: the registry and the control topic are followed from their beginning
  (:mod:`sidecar.plane`), so a halt issued while the sidecar was down applies before it does
  anything; each change is acknowledged on telemetry and handed to the halt handlers.
* Every background loop runs under :mod:`sidecar.supervise`: restarted, logged, counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka.errors import KafkaError

from mesh.adapters import tracing
from mesh.adapters.kafka.config import aiokafka_consumer_config, aiokafka_producer_config
from mesh.adapters.keyfiles import load_or_create_key, trust_anchors
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.adapters.tracing import SpanKind
from mesh.domain.agents import AgentState
from mesh.domain.envelope import Envelope
from mesh.domain.identity import AgentKey, PublicKeys
from mesh.domain.topics import (
    APPROVALS,
    CONTROL,
    KEYS,
    POLICIES,
    REGISTRY,
    REGISTRY_EVENTS,
    THROTTLES,
    inbox_topic,
)
from mesh.errors import (
    AgentRefusedError,
    KafkaUnavailableError,
    PolicyViolationError,
    RecipientError,
    SerdeError,
)
from mesh.settings import Cluster
from sidecar import facts
from sidecar.approvals import Approvals
from sidecar.consume import STOP_TIMEOUT_S, InboxConsumer, ensure_topics
from sidecar.delivery import Delivery, message_body
from sidecar.follow import Follower
from sidecar.governed import Governed
from sidecar.inbox import Counters, Inbox
from sidecar.outbox import KafkaSink, Outbox
from sidecar.plane import HaltHandler, Plane
from sidecar.policy import AgentPolicy
from sidecar.reports import Reports
from sidecar.rotation import KeyRotation
from sidecar.routing import route, stamp
from sidecar.serving import Serving
from sidecar.spec import AgentSpec
from sidecar.supervise import Supervisor
from sidecar.tasks import TaskSteps
from sidecar.telemetry import Kind
from sidecar.tools import Cause, ToolCall, ToolCalls

__all__ = ["MESSAGE_SUBJECT", "Delivery", "Sidecar", "ToolCall", "message_body"]

MESSAGE_SUBJECT = "mesh.a2a.Message"
_log = logging.getLogger("mesh.sidecar")


class Sidecar(ToolCalls, TaskSteps, KeyRotation, Governed, Serving):
    def __init__(
        self,
        cluster: Cluster,
        serde: Serde,
        spec: AgentSpec,
        *,
        key: AgentKey | None = None,
        instance_id: str | None = None,
        heartbeat_s: float = 5.0,
        key_wait_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster, self.serde, self.spec = cluster, serde, spec
        settings = self.settings = cluster.settings
        anchors = trust_anchors(settings)  # first: no anchors, no sidecar (fail closed)
        self.agent_id = spec.agent_id
        self.key_file = settings.state_dir / "keys" / f"{spec.agent_id}.key"
        self.key = key or load_or_create_key(self.key_file, spec.agent_id)
        self.instance_id = instance_id or f"{spec.agent_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_s, self.key_wait_s, self.clock = heartbeat_s, key_wait_s, clock
        self.codec = MessageCodec(serde, PublicKeys(), max_bytes=settings.max_message_bytes)
        self.counters = Counters()
        self.supervisor = Supervisor(spec.agent_id)
        self._sink = KafkaSink(aiokafka_producer_config(cluster))
        self.outbox = Outbox(
            self.agent_id, self.key, self.codec, cluster.prefix, self._sink, self.instance_id
        )
        self.inbox = Inbox(
            self.codec,
            self._sender_key,
            self.outbox,
            f"sidecar:{self.instance_id}",
            self.counters,
            admission=self._admission,
        )
        self.plane = Plane(
            self.agent_id,
            spec.capabilities,
            self.codec,
            anchors,
            self.outbox,
            self.counters,
            settings.control_stale_ms / 1000,
        )
        self.control = self.plane.control
        self.plane.handlers.append(self._on_halt_change)
        self.reports = Reports(self.outbox, self.counters, self, clock)
        self.reports.approvals = Approvals(
            self.agent_id, self.plane.approvals, self.outbox, self.plane
        )
        group = cluster.topic(f"agent.{self.agent_id}")
        self._consumer = InboxConsumer(
            cluster.topic(inbox_topic(self.agent_id).name),
            aiokafka_consumer_config(cluster, group),
            self.inbox,
        )
        self._partitions: dict[str, int] = {}
        self._heartbeats = 0
        self.started = False
        tracing.configure_from_env(f"agent-mesh-sidecar-{spec.agent_id}")

    @property
    def halt(self) -> dict[str, Any] | None:
        """The halt in force for this agent (None: it may act, if control is followed)."""
        return self.control.applied

    @property
    def producer_replacements(self) -> int:
        """Producers replaced because a write was not acknowledged in time (sidecar.outbox)."""
        return self._sink.replacements

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
        self._partitions = await asyncio.to_thread(ensure_topics, self.cluster, self.agent_id)
        await self._sink.start()
        self.supervisor.spawn("control follower", self._follow, self.control.follower_stopped)
        await self.plane.wait_caught_up()
        # Registered before the halt in force is applied, so that its acknowledgement is about
        # a known agent; the agent cannot act before start() returns either way.
        registration = self.spec.registration(self.key.public_bytes, self.settings.profile)
        await self._write_event(REGISTRY_EVENTS, "mesh.registry.AgentRegistered", registration)
        self.plane.applying_changes = True
        await self.plane.apply()
        await self._consumer.start()
        self.supervisor.spawn("inbox", self._consumer.run)
        self.supervisor.spawn("heartbeat", self._heartbeat)
        self.supervisor.spawn("commits", self._consumer.commit_every)
        self.started = self.plane.measuring = True

    async def stop(self, *, deregister: bool = True) -> None:
        """Detach; a clean stop retires the agent from the registry (``deregister``).
        Idempotent."""
        await self.supervisor.stop()
        try:
            await self._consumer.stop()
        except (KafkaError, KafkaUnavailableError) as exc:  # not committed: redelivered
            self.counters.commit_failures += 1
            _log.warning("%s: the last inbox commit failed: %r", self.agent_id, exc)
        if deregister and self.started:
            retired = facts.retired(self.agent_id, "sidecar stopped cleanly", self.instance_id)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._write_event(REGISTRY_EVENTS, "mesh.registry.AgentRetired", retired)
            except (TimeoutError, KafkaUnavailableError) as exc:  # its heartbeat goes stale
                _log.warning("%s: the retirement was not written: %r", self.agent_id, exc)
        await self._sink.stop()
        self.plane.applying_changes = self.plane.measuring = False
        self.started = False

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def on_halt(self, handler: HaltHandler) -> None:
        """Call ``handler(halt)`` when the agent is halted, and ``handler(None)`` on resume."""
        self.plane.handlers.append(handler)

    # -- outgoing --------------------------------------------------------------------------

    async def send(
        self,
        to: str | None = None,
        body: Mapping[str, Any] | None = None,
        *,
        capability: str | None = None,
        task_id: str | None = None,
        reply_to: Cause = None,
        subject: str = MESSAGE_SUBJECT,
        text: str | None = None,
        data: Any = None,
    ) -> str:
        """Send to an agent (``to``) or to an agent with ``capability``; returns the message id.

        ``reply_to`` (a Delivery or a delivered message id; inside an SDK handler, the message
        handled) makes this message caused by that one: same conversation, task and chain
        (correlation), one hop further.
        """
        if body is None:
            body = message_body(text, data)
        parent = self._traceparent_of(reply_to)
        with tracing.span("send", SpanKind.PRODUCER, parent, {"mesh.sender": self.agent_id}):
            return await self._send(to, body, capability, task_id, reply_to, subject)

    async def _send(
        self,
        to: str | None,
        body: Mapping[str, Any],
        capability: str | None,
        task_id: str | None,
        reply_to: Cause,
        subject: str,
    ) -> str:
        cause = None
        try:
            self.check_may_act()
            policy = self.enforced()
            cause = self._cause(reply_to)
            policy.check_chain_start(cause is not None)
            self.reports.check_chain(cause)
            self.plane.check_throttle(Kind.MESSAGE_SENT, int(self.clock() * 1000))
            recipient = await self._route(policy, to, capability, task_id)
            self.check_certified(recipient)
            envelope = stamp(self.agent_id, recipient, task_id, cause)
            envelope = envelope._replace(traceparent=tracing.traceparent_or(envelope.traceparent))
            policy.check_hops(envelope.hop_count)
            self.serde.validate(subject, body)
            policy.check_message(subject, body, "its policy")
            value = self.outbox.message(envelope, subject, body)
            policy.check_size(len(value))
        except (AgentRefusedError, SerdeError) as exc:
            await self.reports.refused("send", exc, peer=to or capability, about=cause)
            raise
        topic = self.cluster.topic(inbox_topic(recipient).name)
        key = (envelope.task_id or envelope.conversation_id).encode()
        sent = self.outbox.telemetry(Kind.MESSAGE_SENT, subject, peer=recipient, about=envelope)
        await self.outbox.write((topic, key, value), sent)
        self.counters.sent += 1
        return envelope.message_id

    async def _route(
        self, policy: AgentPolicy, to: str | None, capability: str | None, task_id: str | None
    ) -> str:
        """The recipient; a registration this sidecar has not read yet is waited for (up to
        ``key_wait_s``), since its view of the registry trails the topic by a moment."""
        deadline = time.monotonic() + self.key_wait_s
        while True:
            try:
                return route(self.plane.agents, self.control.book, policy, to, capability, task_id)
            except RecipientError as exc:
                remaining = deadline - time.monotonic()
                if exc.rule == "bad_recipient" or remaining <= 0:
                    raise
            await self.plane.wait_changed(remaining)

    # -- incoming --------------------------------------------------------------------------

    async def receive(
        self, timeout_s: float | None = None, *, auto_ack: bool = True
    ) -> Delivery | None:
        """The next verified message (None on timeout). With ``auto_ack`` (the default for
        direct use) it is acknowledged as it is taken; otherwise it stays outstanding until
        :meth:`ack`, and is delivered again if it is given back (:meth:`nack`), not
        acknowledged in time, or held when the agent is halted (see :mod:`sidecar.inbox`).
        A message of a halted chain is not handed over: it is acknowledged and its refusal
        reported (``chain_halted``), so the chain stops here while other chains go on."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            delivery = await self.inbox.receive(left, auto_ack=auto_ack)
            if delivery is None:
                return None
            try:
                self.reports.check_chain(delivery.envelope)
            except PolicyViolationError as exc:
                self.inbox.ack(delivery.message_id)
                await self.reports.refused(
                    "deliver", exc, peer=delivery.envelope.sender, about=delivery.envelope
                )
                continue
            with tracing.span("receive", SpanKind.CONSUMER, delivery.envelope.traceparent,
                              {"mesh.recipient": self.agent_id}):  # fmt: skip
                return delivery

    def ack(self, message_id: str) -> bool:
        """The agent is done with the message (its offset may be committed)."""
        return self.inbox.ack(message_id)

    def nack(self, message_id: str) -> bool:
        """The agent gives the message back: it is delivered again."""
        return self.inbox.nack(message_id)

    def delivered(self, message_id: str) -> Envelope | None:
        """The envelope of a recently delivered message (to reply to it by id)."""
        return self.inbox.recent.get(message_id)

    def agents(self) -> dict[str, AgentState]:
        return dict(self.plane.agents)

    @property
    def follower(self) -> Follower | None:
        return self.plane.follower

    # -- internals: outgoing ---------------------------------------------------------------

    async def _write_event(
        self, topic: str, subject: str, body: Mapping[str, Any], key: str | None = None
    ) -> None:
        await self.outbox.write(self.outbox.event(topic, subject, body, key))

    # -- internals: incoming ---------------------------------------------------------------

    async def _sender_key(self, sender: str) -> bytes:
        return await self.plane.sender_key(sender, self.key_wait_s)

    async def _follow(self) -> None:
        topics = {
            "registry": self.cluster.topic(REGISTRY),
            "keys": self.cluster.topic(KEYS),
            "control": self.cluster.topic(CONTROL),
            "policies": self.cluster.topic(POLICIES),
            "approvals": self.cluster.topic(APPROVALS),
            "throttles": self.cluster.topic(THROTTLES),
        }
        await self.plane.follow(self.cluster, topics, self._partitions)

    def _on_halt_change(self, halt: dict[str, Any] | None) -> None:
        """A halted agent receives nothing (its inbox waits); a resume delivers what waited
        and starts a fresh spend window."""
        if halt is not None:
            self.inbox.pause()
            return
        self.inbox.resume()
        with contextlib.suppress(AgentRefusedError):
            self.reports.fresh_window(self.enforced())

    async def _heartbeat(self) -> None:
        """Heartbeat at once (the registry learns this instance) and then every interval;
        say so once when other instances of the agent run beside this one (replicas share
        the inbox; the agent retires only when the last one leaves)."""
        others_seen: set[str] = set()
        while True:
            self._heartbeats += 1
            beat = facts.heartbeat(self.agent_id, self.instance_id, self._heartbeats)
            await self._write_event(REGISTRY_EVENTS, "mesh.registry.Heartbeat", beat)
            record = self.plane.agents.get(self.agent_id)
            others = {i for i, _ in record.instances} - {self.instance_id} if record else set()
            if others - others_seen:
                _log.warning(
                    "%s: %d other instance(s) of this agent run beside %s (%s); they share its "
                    "inbox, and the agent retires when the last one stops",
                    self.agent_id, len(others), self.instance_id, ", ".join(sorted(others)),
                )  # fmt: skip
                others_seen |= others
            await asyncio.sleep(self.heartbeat_s)
