"""Who may touch which topic, from the topic catalogue: the ACLs `mesh acl apply` writes (pure).

Signatures make a forged record useless to every reader; ACLs stop it reaching the topic at
all, so the broker itself refuses what no reader should ever have to judge. Principals are
Kafka users (SASL/SCRAM on the secure profile):

* the **processors** principal: everything on the mesh's topics (they read every input and
  write the registry, state, audit, control, key directory, throttles and dead letters), every
  consumer group and transactional id, and the schema registry's topic;
* an **operator** principal: writes control, policies and approvals (halts, resumes,
  policies, decisions), reads every mesh topic (`mesh halts`, `mesh audit verify`, ...);
* each **agent** principal (its user name is the agent id): writes any inbox (sending), its
  telemetry, registry events, task events, approval requests and dead letters; reads and
  creates only **its own** inbox, in only its own consumer group; reads the topics its sidecar
  follows. It may not write control, policies, the registry, the key directory or the audit
  log, read another agent's inbox, or delete or alter any topic.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

from mesh.domain.topics import (
    APPROVALS,
    AUDIT,
    AUDIT_CHECKPOINTS,
    CONTROL,
    DLQ,
    KEYS,
    POLICIES,
    REGISTRY,
    REGISTRY_EVENTS,
    SCHEMAS,
    STATE,
    TASKS,
    TELEMETRY,
    THROTTLES,
    inbox_topic,
)

__all__ = ["Grant", "Op", "Pattern", "Resource", "plan_acls"]

#: The throwaway consumer groups of the mesh's readers (tables, `mesh` commands): a random id
#: under this prefix, never committed to; reading a topic still needs its own topic ACL.
READER_GROUPS = "mesh-reader-"


class Resource(StrEnum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"
    CLUSTER = "CLUSTER"


class Pattern(StrEnum):
    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Op(StrEnum):
    ALL = "ALL"
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    IDEMPOTENT_WRITE = "IDEMPOTENT_WRITE"


class Grant(NamedTuple):
    principal: str  # a user name; written as User:NAME
    resource: Resource
    name: str
    pattern: Pattern
    operation: Op


#: What every sidecar follows or reads per task.
_FOLLOWED = (REGISTRY, KEYS, CONTROL, POLICIES, APPROVALS, THROTTLES, STATE)
#: What an agent writes besides inboxes.
_AGENT_WRITES = (TELEMETRY, REGISTRY_EVENTS, TASKS, APPROVALS, DLQ)
_OPERATOR_WRITES = (CONTROL, POLICIES, APPROVALS)


def plan_acls(
    prefix: str, processors: str, operators: Iterable[str], agents: Iterable[str]
) -> list[Grant]:
    """Every grant for these principals on the mesh under topic ``prefix``."""
    grants = _processors(prefix, processors)
    for operator in operators:
        grants += _operator(prefix, operator)
    for agent in sorted(set(agents)):
        grants += _agent(prefix, agent)
    return list(dict.fromkeys(grants))  # each once (reading and writing a topic both describe)


def _processors(prefix: str, user: str) -> list[Grant]:
    return [
        Grant(user, Resource.TOPIC, f"{prefix}mesh.", Pattern.PREFIXED, Op.ALL),
        Grant(user, Resource.TOPIC, f"{prefix}{SCHEMAS}", Pattern.LITERAL, Op.ALL),
        Grant(user, Resource.GROUP, prefix, Pattern.PREFIXED, Op.ALL),
        Grant(user, Resource.GROUP, READER_GROUPS, Pattern.PREFIXED, Op.READ),
        Grant(user, Resource.TRANSACTIONAL_ID, prefix, Pattern.PREFIXED, Op.ALL),
        Grant(user, Resource.CLUSTER, "kafka-cluster", Pattern.LITERAL, Op.IDEMPOTENT_WRITE),
        Grant(user, Resource.CLUSTER, "kafka-cluster", Pattern.LITERAL, Op.DESCRIBE_CONFIGS),
    ]


def _operator(prefix: str, user: str) -> list[Grant]:
    grants = [
        Grant(user, Resource.TOPIC, f"{prefix}mesh.", Pattern.PREFIXED, Op.READ),
        Grant(user, Resource.TOPIC, f"{prefix}mesh.", Pattern.PREFIXED, Op.DESCRIBE),
        Grant(user, Resource.TOPIC, f"{prefix}mesh.", Pattern.PREFIXED, Op.DESCRIBE_CONFIGS),
        Grant(user, Resource.TOPIC, f"{prefix}{SCHEMAS}", Pattern.LITERAL, Op.READ),
        Grant(user, Resource.GROUP, prefix, Pattern.PREFIXED, Op.READ),
        Grant(user, Resource.GROUP, READER_GROUPS, Pattern.PREFIXED, Op.READ),
        Grant(user, Resource.CLUSTER, "kafka-cluster", Pattern.LITERAL, Op.IDEMPOTENT_WRITE),
    ]
    for topic in _OPERATOR_WRITES:
        grants.append(Grant(user, Resource.TOPIC, f"{prefix}{topic}", Pattern.LITERAL, Op.WRITE))
    return grants


def _agent(prefix: str, agent: str) -> list[Grant]:
    inbox = f"{prefix}{inbox_topic(agent).name}"
    grants = [
        Grant(agent, Resource.TOPIC, f"{prefix}mesh.inbox.", Pattern.PREFIXED, Op.WRITE),
        Grant(agent, Resource.TOPIC, f"{prefix}mesh.inbox.", Pattern.PREFIXED, Op.DESCRIBE),
        Grant(agent, Resource.TOPIC, inbox, Pattern.LITERAL, Op.READ),
        Grant(agent, Resource.TOPIC, inbox, Pattern.LITERAL, Op.CREATE),
        Grant(agent, Resource.TOPIC, inbox, Pattern.LITERAL, Op.DESCRIBE_CONFIGS),
        Grant(agent, Resource.GROUP, f"{prefix}agent.{agent}", Pattern.LITERAL, Op.READ),
        Grant(agent, Resource.GROUP, READER_GROUPS, Pattern.PREFIXED, Op.READ),
        Grant(agent, Resource.TOPIC, f"{prefix}{SCHEMAS}", Pattern.LITERAL, Op.READ),
        Grant(agent, Resource.TOPIC, f"{prefix}{SCHEMAS}", Pattern.LITERAL, Op.DESCRIBE),
        Grant(agent, Resource.CLUSTER, "kafka-cluster", Pattern.LITERAL, Op.IDEMPOTENT_WRITE),
    ]
    for topic in _FOLLOWED:
        grants.append(Grant(agent, Resource.TOPIC, f"{prefix}{topic}", Pattern.LITERAL, Op.READ))
        grants.append(
            Grant(agent, Resource.TOPIC, f"{prefix}{topic}", Pattern.LITERAL, Op.DESCRIBE)
        )
    for topic in _AGENT_WRITES:
        grants.append(Grant(agent, Resource.TOPIC, f"{prefix}{topic}", Pattern.LITERAL, Op.WRITE))
        grants.append(
            Grant(agent, Resource.TOPIC, f"{prefix}{topic}", Pattern.LITERAL, Op.DESCRIBE)
        )
    return grants


#: Topics no agent may write, named for documentation and tests.
PROTECTED = (CONTROL, POLICIES, REGISTRY, KEYS, AUDIT, AUDIT_CHECKPOINTS, THROTTLES, STATE)
