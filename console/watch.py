"""Telemetry as the console follows it: who acknowledged each halt, and what each agent spent
in the last minute.

One reader of ``mesh.telemetry.v1`` from a point in time on (the oldest halt in force, at
most a day back, or now), each record opened once:

* a ``HALT_ACK`` verified with its sender's key counts for the halt its detail names
  (:func:`mesh.adapters.acks.ack_of`), so the halts view says who stopped and how fast;
* a model or tool call's ``cost_usd``, verified the same way, goes into its agent's
  one-minute sliding window (:class:`mesh.domain.windows.SlidingWindow`, by the time the
  sidecar wrote it): the fleet view's "spend 1m". The KPI processor's buckets are five
  minutes, too coarse for "what is this agent spending right now".

Every record is verified before it counts: a hostile agent cannot stop another's halt from
looking acknowledged, nor put spend on another's name. The key is the registry's
(``key_for``), which the registry processor accepted only when signed.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Message

from mesh.adapters.acks import Ack, ack_of
from mesh.adapters.kafka.table import TopicFold
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.kpis import telemetry_fact
from mesh.domain.telemetry import TELEMETRY_SUBJECT, Kind
from mesh.domain.topics import TELEMETRY
from mesh.domain.windows import SlidingWindow
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["SPEND_WINDOW_MS", "TelemetryWatch"]

SPEND_WINDOW_MS = 60_000


class TelemetryWatch(TopicFold):
    def __init__(
        self,
        cluster: Cluster,
        codec: MessageCodec,
        key_for: Callable[[str], bytes],
        since_ms: int,
    ) -> None:
        self.acks: dict[str, dict[str, Ack]] = {}  # command id -> instance -> its ack
        self.spend: dict[str, SlidingWindow] = {}  # agent -> its last minute's calls
        self.acknowledged = 0  # acknowledgements counted so far (changed: redo the halts)
        self._codec, self._key_for = codec, key_for
        super().__init__(cluster, cluster.topic(TELEMETRY), since_ms)

    def spent(self, now_ms: int) -> dict[str, float]:
        """Each agent's spend over the last minute (agents with none left out)."""
        totals = {agent: window.slide(now_ms) for agent, window in self.spend.items()}
        return {agent: round(total, 6) for agent, total in totals.items() if total > 1e-12}

    def _fold(self, message: Message) -> None:
        try:
            opened = self._codec.open(message.value() or b"", verify=False)
        except MeshError:
            return  # the sidecars' and processors' business, not the console's
        if opened.body_subject != TELEMETRY_SUBJECT:
            return
        if opened.body.get("kind") == Kind.HALT_ACK:
            ack = ack_of(opened, self._key_for, Kind.HALT_ACK)
            if ack is not None:
                self.acks.setdefault(ack.command_id, {})[ack.targets[0]] = ack
                self.acknowledged += 1
            return
        sender = opened.envelope.sender
        cost, _ = telemetry_fact(sender, opened.body)
        if cost <= 0:
            return
        try:
            opened.verify(self._key_for(sender))
        except MeshError:
            return  # forged spend counts for nobody
        window = self.spend.setdefault(sender, SlidingWindow(SPEND_WINDOW_MS))
        window.add(opened.envelope.created_at_ms, cost)
