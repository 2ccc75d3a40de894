"""The control plane as one sidecar sees it: the agent registry (capabilities, status), the key
directory (``mesh.keys.v1``: the keys the mesh countersigned, the only place sender keys come
from) and the halts in force, followed from the beginning of their topics by one consumer.

:class:`Plane` folds the registry into ``agents`` and the control topic into a
:class:`~sidecar.halts.ControlView`; records on the control topic that no control signer
signed are ignored, logged and counted (the kill-switch dead-letters them once). From the
agent's registration on, every change of the halt in force is applied as it arrives, in
order: acknowledged on telemetry (``HALT_ACK``/``RESUME_ACK``) and handed to the halt
handlers. The follower runs under the sidecar's supervisor: when it dies the view fails
closed at once, and its restart re-reads both topics (folding is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import ConsumerRecord

from mesh.adapters.approvals import fold_approval
from mesh.adapters.kafka.keys import fold_statement
from mesh.adapters.policies import fold_policy
from mesh.adapters.serde.control import open_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agent_record import from_record
from mesh.domain.agents import AgentState
from mesh.domain.approvals import ApprovalBook
from mesh.domain.control import KILLSWITCH_AGENT, MESH_SIGNER
from mesh.domain.dependencies import capabilities
from mesh.domain.keys import KeyDirectory
from mesh.domain.policies import PolicyBook, PolicyInForce
from mesh.domain.telemetry import THROTTLE_SUBJECT
from mesh.errors import KafkaUnavailableError, MeshError, ThrottledError, UnknownSenderError
from mesh.settings import Cluster
from sidecar.follow import Follower
from sidecar.halts import ControlView
from sidecar.inbox import Counters
from sidecar.outbox import Outbox
from sidecar.policy import AgentPolicy, narrowest, parse_agent_policy
from sidecar.telemetry import Kind

__all__ = ["HaltHandler", "Plane"]

HaltHandler = Callable[[dict[str, Any] | None], Awaitable[None] | None]
_log = logging.getLogger("mesh.sidecar")


class Plane:
    def __init__(
        self,
        agent_id: str,
        declared_capabilities: tuple[str, ...],
        codec: MessageCodec,
        signers: Mapping[str, bytes],
        outbox: Outbox,
        counters: Counters,
        stale_after_s: float,
    ) -> None:
        self.agent_id = agent_id
        self.declared_capabilities = declared_capabilities
        self.codec, self.serde = codec, codec.serde
        self.signers = dict(signers)
        self.outbox, self.counters = outbox, counters
        self.control = ControlView(agent_id, stale_after_s)
        self.agents: dict[str, AgentState] = {}
        self.keys = KeyDirectory(self.signers[MESH_SIGNER])
        self.policies = PolicyBook()
        self.approvals = ApprovalBook()  # human approvals of this agent's tool calls
        self.throttles: dict[str, dict[str, Any]] = {}  # kind of action -> Throttle in force
        self._narrowed: dict[tuple[str, AgentPolicy], AgentPolicy] = {}  # by policy hash
        self._parsed: dict[str, AgentPolicy] = {}  # operator policies of senders, by hash
        self.follower: Follower | None = None
        self.handlers: list[HaltHandler] = []
        self.applying_changes = False  # from registration on
        self.measuring = False  # halt latencies, once the sidecar has started
        self._changed = asyncio.Event()
        self._applying: set[asyncio.Task[None]] = set()

    # -- following -------------------------------------------------------------------------

    async def follow(
        self,
        cluster: Cluster,
        topics: Mapping[str, str],
        partitions: Mapping[str, int],
    ) -> None:
        """Follow ``topics`` ({"registry", "keys", "control": name}) until cancelled."""
        handlers = {
            topics["registry"]: self._on_agent,
            topics["keys"]: self._on_key,
            topics["control"]: self._on_control,
            topics["policies"]: self._on_policy,
            topics["approvals"]: self._on_approval,
            topics["throttles"]: self._on_throttle,
        }
        confirm_every_s = max(0.1, self.control.stale_after_s / 5)
        follower = Follower(cluster, handlers, partitions, self.control.confirmed, confirm_every_s)
        self.follower = follower
        try:
            await follower.run(await follower.start())
        finally:
            await follower.stop()

    async def wait_caught_up(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.control.confirmed_at is None:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"the sidecar of {self.agent_id!r} could not read the registry and the "
                    f"control topic within {timeout_s:.0f}s; is the broker up?"
                )
            await asyncio.sleep(0.01)

    async def sender_key(self, sender: str, wait_s: float) -> bytes:
        """The sender's registered key; waits up to ``wait_s`` for a fresh registration."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.keys.key_for(sender)
            except UnknownSenderError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- what applies to this agent now ----------------------------------------------------

    def operator_policy(self) -> PolicyInForce | None:
        """The operator's policy in force for this agent (``mesh.policies.v1``), if any."""
        if not self.policies.targets:
            return None
        record = self.agents.get(self.agent_id)
        skills = capabilities(record) if record else list(self.declared_capabilities)
        return self.policies.in_force(self.agent_id, skills)

    def policy(self, own: AgentPolicy) -> AgentPolicy:
        """What the sidecar enforces: the operator's policy in force, narrowed by the agent's
        ``own`` (``mesh.domain.policies``); ``own`` alone while no operator set one."""
        in_force = self.operator_policy()
        if in_force is None:
            return own
        key = (in_force.hash, own)
        narrowed = self._narrowed.get(key)
        if narrowed is None:
            operator = parse_agent_policy(in_force.policy, f"policy {in_force.target!r}")
            narrowed = self._narrowed[key] = narrowest(operator, own)
        return narrowed

    def sender_policy(self, sender: str) -> tuple[PolicyInForce | None, AgentPolicy | None]:
        """The operator policy in force for another agent (a message's sender), parsed once
        per version; (None, None) when there is none."""
        if not self.policies.targets:
            return None, None
        record = self.agents.get(sender)
        in_force = self.policies.in_force(sender, capabilities(record) if record else ())
        if in_force is None:
            return None, None
        parsed = self._parsed.get(in_force.hash)
        if parsed is None:
            parsed = parse_agent_policy(in_force.policy, f"policy {in_force.target!r}")
            self._parsed[in_force.hash] = parsed
        return in_force, parsed

    def killswitch_age_s(self) -> float | None:
        """Seconds since the kill-switch's last heartbeat, as the registry has it (None: it
        never registered)."""
        record = self.agents.get(KILLSWITCH_AGENT)
        if record is None or record.last_heartbeat_ms is None:
            return None
        return max(0.0, time.time() - record.last_heartbeat_ms / 1000)

    async def wait_changed(self, timeout_s: float) -> None:
        """Until the registry or the key directory changes, or ``timeout_s`` passes."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def _on_agent(self, record: ConsumerRecord) -> None:
        agent_id = (record.key or b"").decode()
        if record.value is None:
            self.agents.pop(agent_id, None)
        else:
            try:
                self.agents[agent_id] = from_record(self.serde.decode(record.value).record)
            except MeshError as exc:
                self.counters.undecodable_agents += 1
                _log.warning(
                    "%s: skipped the registry record at %s[%d]@%d: %s",
                    self.agent_id, record.topic, record.partition, record.offset, exc,
                )  # fmt: skip
                return
        self._changed.set()

    def _on_key(self, record: ConsumerRecord) -> None:
        ignored = fold_statement(self.keys, self.serde, record.value)
        if ignored is not None:
            self.counters.untrusted_keys += 1
            _log.warning(
                "%s: ignored the key statement at %s[%d]@%d: %s",
                self.agent_id, record.topic, record.partition, record.offset, ignored,
            )  # fmt: skip
        else:
            self._changed.set()

    def _on_policy(self, record: ConsumerRecord) -> None:
        """Fold an operator's policy (signed by an operator, newer than the one in force)."""
        folded = fold_policy(self.policies, self.codec, record.value, self.signers)
        if isinstance(folded, str):
            self.counters.untrusted_policies += 1
            _log.warning(
                "%s: ignored the policy record at %s[%d]@%d: %s",
                self.agent_id, record.topic, record.partition, record.offset, folded,
            )  # fmt: skip

    def _on_approval(self, record: ConsumerRecord) -> None:
        """Fold a step of a human approval (mesh.domain.approvals). Steps about other agents
        are not this sidecar's business: their signatures are not checked here."""
        why = fold_approval(
            self.approvals, self.codec, record.value, self.signers, self._own_key, record.timestamp
        )
        if why is not None:
            _log.debug("%s: approval step not folded: %s", self.agent_id, why)
        self._changed.set()

    def _on_throttle(self, record: ConsumerRecord) -> None:
        """A fleet rate limit crossed (processors/killswitch/rates.py): only the mesh's key
        may throttle; anything else is ignored, logged and counted."""
        try:
            opened = self.codec.open(record.value or b"", verify=False)
            if opened.envelope.sender != MESH_SIGNER or opened.body_subject != THROTTLE_SUBJECT:
                raise MeshError(f"not a throttle signed by the mesh ({opened.envelope.sender!r})")
            opened.verify(self.signers[MESH_SIGNER])
        except MeshError as exc:
            self.counters.untrusted_controls += 1
            _log.warning("%s: ignored a throttle record: %s", self.agent_id, exc)
            return
        self.throttles[str(opened.body["kind"])] = dict(opened.body)

    def check_throttle(self, kind: str, now_ms: int) -> None:
        """Refuse an action of ``kind`` while the fleet's rate limit for it is in force."""
        throttle = self.throttles.get(kind)
        if throttle is None or now_ms >= int(throttle["until"]):
            return
        wait_s = (int(throttle["until"]) - now_ms) / 1000
        raise ThrottledError(
            f"{throttle['reason']}; retry in {wait_s:.1f}s (nothing is halted: the fleet is "
            "asked to slow down)",
            wait_s,
        )

    def _own_key(self, agent_id: str, _at_ms: int) -> bytes:
        if agent_id != self.agent_id:
            raise UnknownSenderError(f"a step about {agent_id!r}, not {self.agent_id!r}")
        return self.outbox.key.public_bytes

    def _on_control(self, record: ConsumerRecord) -> None:
        """Fold a halt or resume signed by a control signer; ignore anything else (the
        kill-switch dead-letters it, once, with the reason)."""
        if record.value is None:
            self.counters.stale_controls += 1  # a tombstone lifts nothing (see HaltBook)
            _log.warning("%s: ignored a tombstone on %s", self.agent_id, record.topic)
            return
        try:
            opened = open_control(self.codec, record.value, self.signers)
        except MeshError as exc:
            self.counters.untrusted_controls += 1
            _log.warning(
                "%s: ignored the control record at %s[%d]@%d: %s",
                self.agent_id, record.topic, record.partition, record.offset, exc,
            )  # fmt: skip
            return
        stale = self.control.fold((record.key or b"").decode(), opened.body, opened.envelope.sender)
        if stale is not None:
            self.counters.stale_controls += 1
            _log.warning("%s: a control command changed nothing: %s", self.agent_id, stale)
            return
        if self.applying_changes:  # from registration on, each change applies as it arrives
            self._apply_soon()

    def _apply_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.apply())
        self._applying.add(task)
        task.add_done_callback(self._applied)

    def _applied(self, task: asyncio.Task[None]) -> None:
        self._applying.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters.apply_failures += 1
            _log.error("%s: applying a halt change failed: %r", self.agent_id, task.exception())

    async def apply(self) -> None:
        """Apply the halt in force if it changed: acknowledge it, then tell the handlers."""
        mine = capabilities(self.agents.get(self.agent_id)) or list(self.declared_capabilities)
        change = self.control.change(mine)
        if change is None:
            return
        halt = change.halt
        if halt is not None:
            produced = halt.get("trigger_produced_at")
            latency = 0.0  # from the trigger to this acknowledgement: the KPIs' time to halt
            if produced and self.measuring:
                latency = max(0.0, time.time() * 1000 - produced)
                self.counters.halt_latencies_ms.append(latency)
            detail = f"{halt['command_id']}: {halt['reason']}"
            ack = self.outbox.telemetry(
                Kind.HALT_ACK, halt["rule"], detail=detail, latency_ms=latency
            )
            await self.outbox.write(ack)
        else:  # the detail names the halt lifted, so `mesh gates drill` can wait for it
            lifted = change.lifted or {}
            detail = f"{lifted.get('command_id', '')}: resumed"
            await self.outbox.write(self.outbox.telemetry(Kind.RESUME_ACK, "resume", detail=detail))
        for handler in self.handlers:
            result = handler(halt)
            if result is not None:
                await result
