"""Confirmed halts: wait for the sidecars a halt targets to acknowledge it (``HALT_ACK``).

A halt is produced once; whether anyone stopped is another question. Every sidecar that
applies a halt says so on ``mesh.telemetry`` (``HALT_ACK``, its detail starting with the halt's
command id), signed with its agent's key. :class:`AckWatch` is positioned at the end of the
telemetry topic *before* the halt is produced, so no acknowledgement can be missed, then
collects verified acknowledgements until every target answered or the deadline passed. A
target is each running *instance* of an agent the halt reaches (the registry tracks the
replicas that heartbeat), so one replica that applied the halt does not hide another that did
not; the acknowledgement names its instance (``instance_id`` on telemetry).
Acknowledgements are verified against the key directory (the keys the mesh countersigned,
``mesh.keys.v1``): a forged one cannot hide a straggler.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from confluent_kafka import TopicPartition

from mesh.adapters.kafka.reading import partitions_of, reader, watermarks
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState, AgentStatus, live_instances
from mesh.domain.control import is_mesh_process
from mesh.domain.keys import KeyDirectory
from mesh.domain.telemetry import TELEMETRY_SUBJECT, Kind
from mesh.domain.topics import TELEMETRY
from mesh.errors import MeshError, TopicNotFoundError
from mesh.settings import Cluster

__all__ = ["AckWatch", "Acks", "live_targets"]


class Acks(NamedTuple):
    acknowledged: list[str]
    missing: list[str]


def live_targets(agents: Mapping[str, AgentState], affected: Iterable[str]) -> list[str]:
    """What must acknowledge a halt: every running instance (``agent/instance``) of each agent
    it reaches that is running now (live, or already halted by another halt), or the agent
    itself when the registry knows none of its instances; ``affected``: the agents named."""
    running = (AgentStatus.LIVE, AgentStatus.HALTED)
    targets: list[str] = []
    for agent_id in sorted(set(affected)):
        state = agents.get(agent_id)
        if state is None or state.status not in running or is_mesh_process(agent_id):
            continue  # the mesh's own processes are never halted
        instances = live_instances(state)
        targets += [f"{agent_id}/{i}" for i in instances] if instances else [agent_id]
    return targets


class AckWatch:
    def __init__(self, cluster: Cluster, codec: MessageCodec) -> None:
        self._codec = codec
        self._consumer = reader(cluster)
        topic = cluster.topic(TELEMETRY)
        try:
            partitions = partitions_of(self._consumer, topic)
        except TopicNotFoundError:
            self._consumer.close()
            raise
        ends = [  # the end now, before the halt is produced
            TopicPartition(topic, p, watermarks(self._consumer, TopicPartition(topic, p))[1])
            for p in partitions
        ]
        self._consumer.assign(ends)

    def wait(
        self,
        command_id: str,
        targets: Iterable[str],
        keys: KeyDirectory,
        deadline_s: float,
        kind: str = Kind.HALT_ACK,
    ) -> Acks:
        """Collect acknowledgements of ``command_id`` from ``targets`` until all answered or
        ``deadline_s`` passed. ``kind`` RESUME_ACK: of the resume that lifted halt
        ``command_id`` (a sidecar's resume acknowledgement names the halt it lifted)."""
        waiting, acked = set(targets), []
        until = time.monotonic() + deadline_s
        try:
            while waiting and time.monotonic() < until:
                message = self._consumer.poll(0.1)
                if message is None or message.error() is not None:
                    continue
                by = self._acknowledger(message.value() or b"", command_id, keys, kind)
                for target in by:
                    if target in waiting:
                        waiting.discard(target)
                        acked.append(target)
        finally:
            self._consumer.close()
        return Acks(sorted(acked), sorted(waiting))

    def _acknowledger(
        self, value: bytes, command_id: str, keys: KeyDirectory, kind: str
    ) -> tuple[str, ...]:
        """Who a record acknowledges the command for: its instance, and its agent (an agent
        target with no known instances is answered by any of its instances)."""
        try:
            opened = self._codec.open(value, verify=False)
            body, sender = opened.body, opened.envelope.sender
            if opened.body_subject != TELEMETRY_SUBJECT or body.get("kind") != kind:
                return ()
            if not str(body.get("detail") or "").startswith(f"{command_id}:"):
                return ()
            opened.verify(keys.key_for(sender))
        except MeshError:
            return ()  # not an acknowledgement this command can count
        instance = body.get("instance_id")
        return (f"{sender}/{instance}", sender) if instance else (sender,)
