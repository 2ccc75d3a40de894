"""The topic catalogue: every mesh topic with its partitions, cleanup policy and configs.

This is pure data plus the pure check that compares a live topic with its entry; creating
topics is :mod:`mesh.kafka.admin`'s job. Topics are never created by broker auto-create.

Why these configs:

* ``mesh.audit.v1`` keeps records forever (``retention.ms=-1``) and is never compacted,
  because a hash chain with a hole in it cannot be verified. Any other cleanup is refused.
  Its signed checkpoints (``mesh.audit.checkpoints.v1``) are kept the same way.
* registry, state, control and ``_mesh_schemas`` are compacted: each holds the latest value
  per key, and a restarting reader must still see every key's last value.
* ``_mesh_schemas`` has one partition so schema registrations are totally ordered.
* Keyed topics that processors join share one partition count (co-partitioning).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "APPROVALS",
    "AUDIT",
    "AUDIT_CHECKPOINTS",
    "CONTROL",
    "DLQ",
    "DRILLS",
    "FLEET_FACTS",
    "INBOX_PATTERN",
    "KEYS",
    "KPIS",
    "KPI_COSTS",
    "POLICIES",
    "REGISTRY",
    "REGISTRY_EVENTS",
    "SCHEMAS",
    "STATE",
    "TASKS",
    "TELEMETRY",
    "THROTTLES",
    "TopicSpec",
    "catalogue",
    "config_conflicts",
    "inbox_topic",
]

REGISTRY_EVENTS = "mesh.registry.events.v1"
REGISTRY = "mesh.registry.v1"
#: The key directory: agent keys countersigned by the mesh, kept whole (docs/security/keys.md).
KEYS = "mesh.keys.v1"
#: Operator-owned policies, signed and versioned, kept whole (mesh.domain.policies).
POLICIES = "mesh.policies.v1"
#: Human approvals of tool calls: requests, operators' decisions, uses; kept whole
#: (mesh.domain.approvals).
APPROVALS = "mesh.approvals.v1"
TASKS = "mesh.tasks.v1"
STATE = "mesh.state.v1"
TELEMETRY = "mesh.telemetry.v1"
#: v2: kept whole (delete, infinite retention) instead of compacted, so no later record under a
#: key can compact a halt away (docs/security/control.md); v1 topics are left as they are.
CONTROL = "mesh.control.v2"
#: The kill-switch's second stage: each instance forwards spend and errors under key '*', so
#: the one instance owning that partition keeps exact fleet windows.
FLEET_FACTS = "mesh.killswitch.fleet.v1"
#: Fleet-wide rate limits crossed, one record per kind of action, signed by the mesh's key
#: (processors/killswitch/rates.py); sidecars refuse that kind while one is in force.
THROTTLES = "mesh.throttles.v1"
#: Scheduled kill-switch drills and their outcomes, signed by the operator key that ran them,
#: kept whole as evidence (mesh.domain.drills).
DRILLS = "mesh.drills.v1"
KPIS = "mesh.kpis.v1"
KPI_COSTS = "mesh.kpis.costs.v1"
AUDIT = "mesh.audit.v1"
AUDIT_CHECKPOINTS = "mesh.audit.checkpoints.v1"
DLQ = "mesh.dlq.v1"
SCHEMAS = "_mesh_schemas"

_FOREVER = {"cleanup.policy": "delete", "retention.ms": "-1"}
_COMPACT = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
_WEEK = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)}
#: A dead letter carries the original bytes plus its reason, so it can exceed the largest
#: record the broker let into the source topic (1 MiB by default): the DLQ accepts up to 8 MiB.
_DEAD = _WEEK | {"max.message.bytes": str(8 * 1024 * 1024)}

#: Configs whose value must match exactly when the topic already exists: the cleanup policy
#: always, and the retention of topics that must keep everything. Other configs of a live topic
#: (segment sizes, a week's retention made a month) may be tuned by operators freely.
_STRICT_KEYS = ("cleanup.policy", "retention.ms")
_KEEP_FOREVER = "-1"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One catalogue entry. ``name`` is the unprefixed name."""

    name: str
    key: str
    what: str
    configs: Mapping[str, str] = field(default_factory=dict)
    partitions: int | None = None  # None: the settings' partition count

    def full_name(self, prefix: str) -> str:
        return f"{prefix}{self.name}"


_ENTRIES: tuple[TopicSpec, ...] = (
    TopicSpec(REGISTRY_EVENTS, "agent id", "agent lifecycle facts", _FOREVER),
    TopicSpec(REGISTRY, "agent id", "current agent record (registry output)", _COMPACT),
    TopicSpec(KEYS, "agent id", "agent keys countersigned by the mesh, kept whole", _FOREVER),
    TopicSpec(
        POLICIES, "agent id, capability:NAME or *", "operator policies, kept whole", _FOREVER
    ),
    TopicSpec(APPROVALS, "request id", "human approvals of tool calls, kept whole", _FOREVER),
    TopicSpec(TASKS, "task id", "task lifecycle events", _WEEK),
    TopicSpec(STATE, "task or conversation id", "shared context between handoffs", _COMPACT),
    TopicSpec(TELEMETRY, "agent id", "tool calls, model calls, errors, latencies", _WEEK),
    TopicSpec(
        CONTROL,
        "agent id, capability:NAME, * or chain:ID",
        "halt and resume commands, kept whole",
        _FOREVER,
    ),
    TopicSpec(
        FLEET_FACTS, "* or chain:ID", "kill-switch fleet and chain facts (second stage)", _WEEK
    ),
    TopicSpec(THROTTLES, "kind of action", "fleet rate limits in force", _COMPACT),
    TopicSpec(DRILLS, "canary agent id", "scheduled kill-switch drills, kept whole", _FOREVER),
    TopicSpec(KPIS, "scope|bucket or task|ID, per partition", "KPI totals (kpis output)", _COMPACT),
    TopicSpec(KPI_COSTS, "task id", "task costs re-keyed by task (kpis, internal)", _WEEK),
    TopicSpec(AUDIT, "source topic-partition", "hash-chained immutable audit log", _FOREVER),
    TopicSpec(AUDIT_CHECKPOINTS, "audit partition", "signed audit chain heads", _FOREVER),
    TopicSpec(DLQ, "source key", "what could not be decoded, verified or admitted", _DEAD),
    TopicSpec(SCHEMAS, "subject + version", "the embedded schema registry", _COMPACT, 1),
)


def catalogue() -> tuple[TopicSpec, ...]:
    """The fixed topics (agent inboxes are created per agent with :func:`inbox_topic`)."""
    return _ENTRIES


#: Every agent inbox (after the topic prefix), for processors that follow them all.
INBOX_PATTERN = r"mesh\.inbox\..+\.v1$"


#: The broker stamps each inbox record with its append time, which no producer can set: a
#: message produced again later (a replay) shows a gap between it and the time it was made.
_APPENDED = {"message.timestamp.type": "LogAppendTime"}


def inbox_topic(agent_id: str) -> TopicSpec:
    """The inbox of one logical agent; its replicas share one consumer group on it."""
    return TopicSpec(
        f"mesh.inbox.{agent_id}.v1", "conversation or task id", "inbox", _WEEK | _APPENDED
    )


def config_conflicts(spec: TopicSpec, live: Mapping[str, str]) -> list[str]:
    """Describe each way a live topic's configs contradict ``spec`` (empty: it agrees)."""
    problems = []
    for key in _STRICT_KEYS:
        wanted = spec.configs.get(key)
        if wanted is None or (key == "retention.ms" and wanted != _KEEP_FOREVER):
            continue
        if live.get(key) != wanted:
            problems.append(f"{key}={live.get(key)!r} but the catalogue requires {wanted!r}")
    return problems
