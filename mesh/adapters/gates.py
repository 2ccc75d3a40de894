"""Production gates on the cluster: gather the evidence for one agent from the mesh, drill its
kill-switch, and certify it (`mesh gates check|drill|certify`). The judging is pure
(:mod:`mesh.domain.gates`); this module only reads and writes Kafka.

* :func:`gather` reads the registry, the operator policies, the drills, the audit topic's
  configuration and the audit processor's progress over the agent's inbox.
* :func:`drill_agent` halts the agent alone (signed with the operator key, exactly as `mesh
  halt`), waits for every running instance's ``HALT_ACK``, resumes it and waits for the
  ``RESUME_ACK`` naming that halt; the timed result is published on ``mesh.drills.v1`` with
  the agent's version. Only a staging agent is drilled: halting a production agent to test it
  would be an outage.
* :func:`certify` judges the gates and publishes an operator-signed ``AgentCertified``:
  granted (with when it lapses) only if every required gate passes, otherwise refused with the
  failing gates, so the agent's sidecar can say which gates hold it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from mesh.adapters.acks import AckWatch, live_targets
from mesh.adapters.audit.coverage import audit_lag
from mesh.adapters.commands import publish_command
from mesh.adapters.drills import publish_drill, read_drills
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.kafka.producing import produce_one
from mesh.adapters.keyfiles import mesh_anchor, operator_key, trust_anchors
from mesh.adapters.policies import read_policies
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import CERTIFIED_SUBJECT, AgentState, AgentStatus
from mesh.domain.control import KILLSWITCH_AGENT, Action, agent_command
from mesh.domain.dependencies import capabilities, dependants, with_capability
from mesh.domain.drills import CANARY, DrillResult
from mesh.domain.envelope import RecipientKind, new_envelope
from mesh.domain.gates import (
    PRODUCTION,
    Evidence,
    GateResult,
    Profile,
    default_profile,
    evaluate,
    expires_at,
    failing,
    parse_profile,
)
from mesh.domain.keys import KeyDirectory
from mesh.domain.telemetry import Kind
from mesh.domain.topics import AUDIT, REGISTRY_EVENTS, inbox_topic
from mesh.errors import ConfigError, MeshError, UnknownTargetError
from mesh.settings import Cluster

__all__ = ["Certified", "certify", "drill_agent", "gather", "load_profile"]


def load_profile(path: Path | None) -> tuple[Profile, str]:
    """The gates profile (defaults when ``path`` is None) and the SHA-256 of its text."""
    if path is None:
        return default_profile(), hashlib.sha256(b"").hexdigest()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the gates profile {path}: {exc.strerror}") from exc
    return parse_profile(text, str(path)), hashlib.sha256(text.encode()).hexdigest()


def _agent(agents: Mapping[str, AgentState], agent_id: str) -> AgentState:
    agent = agents.get(agent_id)
    if agent is None or agent.status is AgentStatus.RETIRED:
        raise UnknownTargetError(
            f"no registered agent {agent_id!r}; `mesh agents ls` lists the agents"
        )
    return agent


def gather(
    cluster: Cluster,
    codec: MessageCodec,
    agent_id: str,
    profile: Profile,
    attestations: Mapping[str, str] | None = None,
) -> Evidence:
    """Everything the gates read about ``agent_id``, as the mesh shows it now."""
    signers = trust_anchors(cluster.settings)
    agents = read_agents(cluster, codec.serde)
    agent = _agent(agents, agent_id)
    in_force = read_policies(cluster, codec, signers).book.in_force(agent_id, capabilities(agent))
    drills = read_drills(cluster, codec, signers)
    killswitch = agents.get(KILLSWITCH_AGENT)
    now_ms = int(time.time() * 1000)
    audit = TopicAdmin(cluster).topic_configs([cluster.topic(AUDIT)])[cluster.topic(AUDIT)]
    holders = tuple(
        a for a in with_capability(agents, profile.escalation_capability)
        if agents[a].status is AgentStatus.LIVE and a != agent_id
    )  # fmt: skip
    policy_ref = (
        "" if in_force is None else (f"{in_force.target} v{in_force.version} {in_force.hash[:16]}")
    )
    killswitch_age_s = None
    if killswitch is not None and killswitch.last_heartbeat_ms is not None:
        killswitch_age_s = max(0.0, (now_ms - killswitch.last_heartbeat_ms) / 1000)
    return Evidence(
        agent=agent,
        now_ms=now_ms,
        policy=None if in_force is None else in_force.policy,
        policy_ref=policy_ref,
        dependants=tuple(dependants(agents, agent_id)),
        killswitch_age_s=killswitch_age_s,
        agent_drill=drills.get(agent_id),
        fleet_drill=drills.get(CANARY),
        audit_retention_ms=int(audit.get("retention.ms", "0")),
        audit_cleanup=audit.get("cleanup.policy"),
        audit_lag=audit_lag(cluster, cluster.topic(inbox_topic(agent_id).name)),
        escalation_holders=holders,
        attestations=dict(attestations or {}),
    )


def drill_agent(
    cluster: Cluster, codec: MessageCodec, agent_id: str, profile: Profile, deadline_s: float
) -> DrillResult:
    """Halt the (staging) agent alone, time its acknowledgement, resume it, time that; the
    result is published. Raise if it runs in production or is not running (nothing is sent
    then)."""
    agents = read_agents(cluster, codec.serde)
    agent = _agent(agents, agent_id)
    if agent.environment == PRODUCTION:
        raise MeshError(
            f"{agent_id!r} runs in production; a certification drill halts a staging instance "
            "of it (register this version in staging first), never a production one"
        )
    targets = live_targets(agents, [agent_id])
    if agent.status is not AgentStatus.LIVE or not targets:
        raise MeshError(f"{agent_id!r} is {agent.status}, not running: there is nothing to drill")
    keys = read_keys(cluster, codec.serde, mesh_anchor(cluster.settings))
    # one producer for every command, connected first: the drill times the halt path, not a
    # new producer's connection and producer id (which alone took ~500 ms here)
    producer = Producer(producer_config(cluster))
    producer.list_topics(timeout=10)
    started_ms = int(time.time() * 1000)
    halt_ms = resume_ms = None
    ids: list[str] = []
    failure = None
    operator = operator_key(cluster.settings).agent_id
    try:
        halt = agent_command(Action.HALT, agent_id, reason="gates drill", requested_by=operator)
        ids.append(str(halt["command_id"]))
        step = Step(cluster, codec, producer, targets, keys, deadline_s)
        halt_ms = step.timed(halt, ids[0], Kind.HALT_ACK)
        resume = agent_command(Action.RESUME, agent_id, reason="gates drill over",
                               requested_by=operator, lifts=ids[0])  # fmt: skip
        ids.append(str(resume["command_id"]))
        resume_ms = step.timed(resume, ids[0], Kind.RESUME_ACK)
    except MeshError as exc:
        failure = str(exc)
        if len(ids) == 1:  # never leave the agent halted by a drill
            with contextlib.suppress(MeshError):
                lift = agent_command(Action.RESUME, agent_id, reason="gates drill failed",
                                     requested_by=operator, lifts=ids[0])  # fmt: skip
                publish_command(cluster, codec, lift, producer)
    result = DrillResult(
        agent_id, started_ms, failure is None, profile.drill_max_age_s, halt_ms, resume_ms,
        failure, command_ids=tuple(ids), agent_version=agent.version,
    )  # fmt: skip
    publish_drill(cluster, codec, result)
    return result


@dataclass(frozen=True, slots=True)
class Step:
    """One timed step of a drill: a command out, every target's acknowledgement back."""

    cluster: Cluster
    codec: MessageCodec
    producer: Producer
    targets: list[str]
    keys: KeyDirectory
    deadline_s: float

    def timed(self, record: dict[str, Any], halt_id: str, kind: str) -> float:
        """Milliseconds from producing ``record`` to every target's acknowledgement
        (``kind``, naming halt ``halt_id``); raise if one is missing at the deadline."""
        watch = AckWatch(self.cluster, self.codec)  # at the end of telemetry, before it goes
        began = time.monotonic()
        publish_command(self.cluster, self.codec, record, self.producer)
        acks = watch.wait(halt_id, self.targets, self.keys, self.deadline_s, kind)
        elapsed = (time.monotonic() - began) * 1000
        if acks.missing:
            raise MeshError(f"no {kind} within {self.deadline_s:g}s from {', '.join(acks.missing)}")
        return elapsed


@dataclass(frozen=True, slots=True)
class Certified:
    results: tuple[GateResult, ...]
    granted: bool
    expires_at_ms: int | None
    failing: tuple[str, ...]


def certify(
    cluster: Cluster,
    codec: MessageCodec,
    agent_id: str,
    by: str,
    profile: Profile,
    profile_hash: str,
    attestations: Mapping[str, str] | None = None,
) -> Certified:
    """Judge every gate and publish the operator-signed verdict (granted or refused)."""
    evidence = gather(cluster, codec, agent_id, profile, attestations)
    results = evaluate(profile, evidence)
    blocked = failing(results)
    until = None if blocked else expires_at(profile, evidence)
    body = {
        "agent_id": agent_id,
        "agent_version": evidence.agent.version,
        "level": PRODUCTION,
        "certified_by": by,
        "note": None,
        "granted": not blocked,
        "gates_json": json.dumps([r.to_json() for r in results], sort_keys=True),
        "expires_at": until,
        "profile_hash": profile_hash,
    }
    key = operator_key(cluster.settings)
    envelope = new_envelope(
        key.agent_id, "", recipient_kind=RecipientKind.BROADCAST, conversation_id="gates"
    )
    value = codec.seal(envelope, CERTIFIED_SUBJECT, body, key)
    produce_one(cluster, cluster.topic(REGISTRY_EVENTS), agent_id, value, "the certification")
    return Certified(results, not blocked, until, blocked)


def wait_certified(
    cluster: Cluster, codec: MessageCodec, agent_id: str, granted: bool, wait_s: float = 15.0
) -> AgentState:
    """The agent's record once the registry shows the verdict (certified, or gates failing)."""
    deadline = time.monotonic() + wait_s
    while True:
        agent = read_agents(cluster, codec.serde).get(agent_id)
        shown = agent is not None and (PRODUCTION in agent.certifications) == granted
        if agent is not None and shown and (granted or agent.gates_failing):
            return agent
        if time.monotonic() > deadline:
            raise MeshError(
                f"the registry did not show the verdict on {agent_id!r} within {wait_s:g}s; "
                "is the registry processor running (`mesh status`)?"
            )
        time.sleep(0.2)
