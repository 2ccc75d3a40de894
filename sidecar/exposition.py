"""A sidecar's Prometheus metrics (``GET /metrics`` on its HTTP API, with its token)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.adapters.metrics import Family

if TYPE_CHECKING:
    from sidecar.core import Sidecar

__all__ = ["sidecar_families"]


def sidecar_families(sidecar: Sidecar) -> list[Family]:
    c = sidecar.counters
    agent = (sidecar.agent_id,)

    def one(name: str, kind: str, help: str, value: float) -> Family:
        return Family(name, kind, help, ("agent",), [(agent, float(value))])

    def by(name: str, help: str, label: str, counts: dict[str, int]) -> Family:
        samples: list[tuple[tuple[str, ...], float]] = [
            ((sidecar.agent_id, k), float(v)) for k, v in sorted(counts.items())
        ]
        return Family(name, "counter", help, ("agent", label), samples)

    return [
        by("mesh_sidecar_refused_by_rule", "Refusals by the rule that refused.", "rule",
           c.refused_by_rule),
        by("mesh_sidecar_dead_lettered_by_reason", "Incoming records dead-lettered, by reason.",
           "reason", c.dead_lettered_by_reason),
        one("mesh_sidecar_messages_sent", "counter", "Messages written.", c.sent),
        one("mesh_sidecar_messages_received", "counter", "Messages delivered.", c.received),
        one("mesh_sidecar_refused", "counter", "Sends, calls and deliveries refused.", c.refused),
        one("mesh_sidecar_dead_lettered", "counter", "Incoming records dead-lettered.",
            c.dead_lettered),
        one("mesh_sidecar_duplicates", "counter", "Incoming duplicates skipped.", c.duplicates),
        one("mesh_sidecar_redelivered", "counter", "Messages handed over again.", c.redelivered),
        one("mesh_sidecar_spend_usd", "counter", "Spend reported, in US dollars.", c.spend_usd),
        one("mesh_sidecar_untrusted_controls", "counter", "Control records ignored (not "
            "signed by a control signer).", c.untrusted_controls),
        one("mesh_sidecar_halted", "gauge", "1 while a halt is in force.",
            1.0 if sidecar.halt else 0.0),
        one("mesh_sidecar_restarts", "counter", "Background loops restarted.",
            float(sum(sidecar.supervisor.restarts.values()))),
        one("mesh_sidecar_producer_replacements", "counter", "Producers replaced after the "
            "broker did not acknowledge a write in time.", sidecar.producer_replacements),
    ]  # fmt: skip
