"""The Python SDK: an agent is a few decorated async functions over an embedded sidecar.

    from sidecar.sdk import Agent

    agent = Agent("echo", capabilities=["echo"])

    @agent.on_message
    async def reply(msg, mesh):
        async with mesh.tool("upper", {"text": msg.text()}, cost_usd=0.001):
            answer = msg.text().upper()   # the tool runs only once its permit is granted
        await mesh.send(msg.sender, text=answer, reply_to=msg)

    agent.run()   # attaches to MESH_BOOTSTRAP_SERVERS or the local broker; Ctrl-C detaches

``mesh`` is the :class:`sidecar.core.Sidecar` itself, so everything the HTTP API offers is
one method call away. A handler runs *serving* its message (``Sidecar.serving``): its sends,
tool permits and reports continue that message's chain, so the chain's budget counts them.
A message is acknowledged when its handler returns (its offset may then
be committed): a handler that raises is reported as an ERROR on telemetry, the message is
acknowledged and the agent carries on; a handler stopped by a halt (HaltedError) gives the
message back, and it is delivered again after the resume; one stopped by a fleet rate limit
(ThrottledError) is given back after the retry time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from mesh.adapters.kafka.source import acquire_broker
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.errors import AgentRefusedError, HaltedError, ThrottledError
from mesh.settings import Cluster, Settings, load_settings
from sidecar.core import Delivery, Sidecar
from sidecar.policy import AgentPolicy
from sidecar.spec import AgentSpec

__all__ = ["Agent"]

MessageHandler = Callable[[Delivery, Sidecar], Awaitable[None]]
HaltHandler = Callable[[dict[str, Any] | None, Sidecar], Awaitable[None]]


class Agent:
    def __init__(
        self,
        agent_id: str,
        *,
        capabilities: Iterable[str] = (),
        description: str = "",
        depends_on_agents: Iterable[str] = (),
        depends_on_tools: Iterable[str] = (),
        policy: AgentPolicy | None = None,
        owner: str = "platform",
        version: str = "1",
        environment: str = "staging",
        rollback_note: str = "",
    ) -> None:
        self.spec = AgentSpec(
            agent_id,
            capabilities=tuple(capabilities),
            description=description,
            depends_on_agents=tuple(depends_on_agents),
            depends_on_tools=tuple(depends_on_tools),
            policy=policy or AgentPolicy(),
            owner=owner,
            version=version,
            environment=environment,
            rollback_note=rollback_note,
        )
        self._on_message: MessageHandler | None = None
        self._on_halt: HaltHandler | None = None
        self._on_start: Callable[[Sidecar], Awaitable[None]] | None = None

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        self._on_message = handler
        return handler

    def on_halt(self, handler: HaltHandler) -> HaltHandler:
        self._on_halt = handler
        return handler

    def on_start(
        self, handler: Callable[[Sidecar], Awaitable[None]]
    ) -> Callable[[Sidecar], Awaitable[None]]:
        self._on_start = handler
        return handler

    async def serve(self, sidecar: Sidecar, stop: asyncio.Event) -> None:
        """Deliver messages to the handler until ``stop`` is set (the sidecar is started)."""
        if self._on_halt is not None:
            on_halt = self._on_halt
            sidecar.on_halt(lambda halt: on_halt(halt, sidecar))
        if self._on_start is not None:
            await self._on_start(sidecar)
        while not stop.is_set():
            delivery = await sidecar.receive(timeout_s=0.2, auto_ack=self._on_message is None)
            if delivery is None or self._on_message is None:
                continue
            try:
                with sidecar.serving(delivery):
                    await self._on_message(delivery, sidecar)
            except HaltedError:
                sidecar.nack(delivery.message_id)  # stopped by a halt: again after the resume
                continue
            except ThrottledError as exc:  # the fleet is asked to slow down: again, later
                await asyncio.sleep(min(exc.retry_after_s, 10.0))
                sidecar.nack(delivery.message_id)
                continue
            except AgentRefusedError:
                pass  # the sidecar already reported the refusal on telemetry
            except Exception as exc:  # noqa: BLE001 - an agent's bug is reported; it goes on
                with contextlib.suppress(AgentRefusedError):
                    await sidecar.report_error(type(exc).__name__, str(exc)[:500], cause=delivery)
            sidecar.ack(delivery.message_id)

    async def attach(self, cluster: Cluster, serde: Serde) -> Sidecar:
        sidecar = Sidecar(cluster, serde, self.spec)
        await sidecar.start()
        return sidecar

    def run(self, settings: Settings | None = None) -> None:
        """Attach and serve until SIGINT/SIGTERM; then detach cleanly."""
        asyncio.run(self._main(settings or load_settings()))

    async def _main(self, settings: Settings) -> None:
        lease = acquire_broker(settings)
        cluster = Cluster(settings, lease.bootstrap)
        registry = open_registry(settings, cluster)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            sidecar = await self.attach(cluster, Serde(registry))
            try:
                await self.serve(sidecar, stop)
            finally:
                await sidecar.stop()
        finally:
            registry.close()
