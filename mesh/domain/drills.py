"""Scheduled kill-switch drills (pure): what one drill found, and whether the last one says
the kill-switch can still halt.

A kill-switch is only exercised in an emergency, so between emergencies it can break without
anyone noticing: a rotated operator key, a sidecar whose control follower died, a kill-switch
processor that stopped. A drill exercises the whole path on a canary agent: a halt signed with
the operator's key, the canary's sidecar acknowledging it (``HALT_ACK``), a resume, each
timed (``stack.drill`` runs them, ``mesh.adapters.drills`` publishes them on
``mesh.drills.v1``). `mesh status` is unhealthy while the last drill failed or is overdue.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["CANARY", "DRILL_SUBJECT", "DrillResult", "drill_health"]

DRILL_SUBJECT = "mesh.drills.DrillResult"
#: The agent the scheduled drill halts and resumes (its sidecar runs in the drill service).
CANARY = "mesh-canary"


@dataclass(frozen=True, slots=True)
class DrillResult:
    canary: str
    at_ms: int
    ok: bool
    every_s: float
    halt_ms: float | None = None
    resume_ms: float | None = None
    failure: str | None = None
    failures_in_row: int = 0
    last_success_ms: int | None = None
    command_ids: tuple[str, ...] = field(default_factory=tuple)
    agent_version: str | None = None  # a gates drill of one agent (None: the canary's)

    def after(self, previous: DrillResult | None) -> DrillResult:
        """This result with the running counts carried on from the previous drill."""
        if self.ok:
            return replace(self, failures_in_row=0, last_success_ms=self.at_ms)
        return replace(
            self,
            failures_in_row=(previous.failures_in_row if previous else 0) + 1,
            last_success_ms=previous.last_success_ms if previous else None,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "canary": self.canary,
            "at": self.at_ms,
            "ok": self.ok,
            "halt_ms": self.halt_ms,
            "resume_ms": self.resume_ms,
            "failure": self.failure,
            "failures_in_row": self.failures_in_row,
            "last_success": self.last_success_ms,
            "every_s": self.every_s,
            "command_ids": list(self.command_ids),
            "agent_version": self.agent_version,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DrillResult:
        return cls(
            canary=str(record["canary"]),
            at_ms=int(record["at"]),
            ok=bool(record["ok"]),
            every_s=float(record["every_s"]),
            halt_ms=record.get("halt_ms"),
            resume_ms=record.get("resume_ms"),
            failure=record.get("failure"),
            failures_in_row=int(record.get("failures_in_row") or 0),
            last_success_ms=record.get("last_success"),
            command_ids=tuple(record.get("command_ids") or ()),
            agent_version=record.get("agent_version"),
        )


def drill_health(last: DrillResult | None, now_ms: int) -> tuple[bool, str]:
    """(healthy, one line): healthy while the last drill passed and the next is not overdue
    (twice the schedule after the last)."""
    if last is None:
        return False, "no drill has run: the kill-switch has not proved it can halt"
    age_s = (now_ms - last.at_ms) / 1000
    if age_s > 2 * last.every_s:
        return False, (
            f"overdue: the last drill ran {age_s:.0f}s ago, on a schedule of every "
            f"{last.every_s:g}s (is the drill service running?)"
        )
    if not last.ok:
        return False, (
            f"FAILED {last.failures_in_row} in a row, last {age_s:.0f}s ago: {last.failure}"
        )
    return True, (
        f"passed {age_s:.0f}s ago: halt acknowledged in {last.halt_ms:.0f} ms, resumed in "
        f"{last.resume_ms:.0f} ms (every {last.every_s:g}s)"
    )
