"""Where a send goes and how it is stamped. Pure: the registry and the halts are passed in.

* :func:`route`: to one named agent, or to a running agent offering a capability (the same
  task always lands on the same one: the pick hashes the task id). Checked against the
  sender's policy; an unknown or retired recipient is refused before anything is sent.
* :func:`stamp`: a fresh envelope with a new W3C trace context, or a reply that continues the
  cause's conversation, task and correlation one hop further.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from mesh.domain.agents import AgentState, AgentStatus
from mesh.domain.control import HaltBook
from mesh.domain.dependencies import capabilities
from mesh.domain.envelope import Envelope, RecipientKind, new_envelope
from mesh.errors import RecipientError
from sidecar.policy import AgentPolicy

__all__ = ["route", "stamp", "traceparent"]


def route(
    agents: Mapping[str, AgentState],
    halts: HaltBook,
    policy: AgentPolicy,
    to: str | None,
    capability: str | None,
    task_id: str | None,
) -> str:
    """The recipient's agent id; raise RecipientError if there is none (or the request names
    none, or two), PolicyViolationError if the policy does not allow it."""
    if (to is None) == (capability is None):
        raise RecipientError("bad_recipient", "name exactly one of an agent (to) or a capability")
    if capability is not None:
        policy.check_capability(capability)
        to = _pick(agents, halts, capability, task_id)
    if to is None:
        raise RecipientError("bad_recipient", "name an agent or a capability")
    policy.check_recipient(to)
    agent = agents.get(to)
    if agent is None or agent.status is AgentStatus.RETIRED:
        raise RecipientError(
            "unknown_recipient",
            f"agent {to!r} is not registered with the mesh (or has retired); nothing sent",
        )
    return to


def _pick(
    agents: Mapping[str, AgentState], halts: HaltBook, capability: str, task_id: str | None
) -> str:
    candidates = sorted(
        a.agent_id
        for a in agents.values()
        if a.status is not AgentStatus.RETIRED
        and capability in capabilities(a)
        and halts.halt_for(a.agent_id, capabilities(a)) is None
    )
    if not candidates:
        raise RecipientError(
            "no_recipient",
            f"no registered, running agent offers capability {capability!r}; nothing sent",
        )
    pick = hashlib.sha256((task_id or str(uuid.uuid4())).encode()).digest()[0]
    return candidates[pick % len(candidates)]


def stamp(sender: str, recipient: str, task_id: str | None, cause: Envelope | None) -> Envelope:
    """The envelope of a new message, or of a reply to ``cause``."""
    if cause is not None:
        changes: dict[str, Any] = {}
        if task_id is not None:
            changes["task_id"] = task_id
        return cause.reply(sender, recipient, **changes)
    return new_envelope(sender, recipient, task_id=task_id, traceparent=traceparent())._replace(
        recipient_kind=RecipientKind.AGENT
    )


def traceparent() -> str:
    """A fresh W3C trace context for a root message (version 00, sampled)."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
