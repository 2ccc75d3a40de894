"""Operator-owned policies: which policy is in force for an agent (pure).

An agent used to declare its own limits. Now an operator publishes policies on
``mesh.policies.v1`` (delete policy, infinite retention: like the control topic, nothing can
compact a policy away), each signed by an operator key, under a target: an agent id,
``capability:NAME``, or ``*`` for the fleet default. Each has a version, growing per target.

Every reader folds the topic in order (:class:`PolicyBook`) and keeps, per target, the newest
version an operator signed: a record signed by anyone else, or an older version produced again,
changes nothing. The policy in force for an agent is its own target's, else that of the first of
its capabilities (by name) that has one, else the fleet default. The sidecar enforces the
narrower of that and the agent's own declared policy: an agent can tighten its limits, never
widen them.

A policy's ``hash`` (SHA-256 of its canonical JSON) is stamped on what it decides, so the audit
shows which version of which policy refused something.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FLEET",
    "POLICY_SUBJECT",
    "PolicyBook",
    "PolicyInForce",
    "canonical",
    "diff_policies",
    "policy_hash",
]

POLICY_SUBJECT = "mesh.policy.PolicyRecord"
FLEET = "*"


def canonical(policy: Mapping[str, Any]) -> str:
    """The one JSON text of a policy: sorted keys, no spaces (what is hashed and published)."""
    return json.dumps(policy, sort_keys=True, separators=(",", ":"))


def policy_hash(policy_json: str) -> str:
    return hashlib.sha256(canonical(json.loads(policy_json)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PolicyInForce:
    target: str
    version: int
    policy_json: str
    author: str
    reason: str
    #: SHA-256 of the canonical policy, computed once: the sidecar asks on every send.
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", policy_hash(self.policy_json))

    @property
    def policy(self) -> dict[str, Any]:
        return dict(json.loads(self.policy_json))


class PolicyBook:
    """The fold of ``mesh.policies.v1`` (see the module docstring)."""

    def __init__(self) -> None:
        self.targets: dict[str, PolicyInForce] = {}

    def apply(self, record: Mapping[str, Any], signer: str, operators: Iterable[str]) -> str | None:
        """Fold one policy record signed by ``signer``; returns why it changed nothing."""
        target = str(record["target"])
        if signer not in set(operators):
            return f"a policy for {target!r} signed by {signer!r}, not an operator; ignored"
        held = self.targets.get(target)
        version = int(record["version"])
        if held is not None and version <= held.version:
            if version == held.version and record["policy_json"] == held.policy_json:
                return None  # the same record read twice
            return (
                f"policy version {version} for {target!r} is not newer than the one in force "
                f"({held.version}): a replay; ignored"
            )
        self.targets[target] = PolicyInForce(
            target, version, str(record["policy_json"]), signer, str(record.get("reason") or "")
        )
        return None

    def in_force(self, agent_id: str, capabilities: Iterable[str] = ()) -> PolicyInForce | None:
        """The policy for ``agent_id``: its own, else its first capability's, else the fleet's."""
        for target in (agent_id, *(f"capability:{c}" for c in sorted(capabilities)), FLEET):
            found = self.targets.get(target)
            if found is not None:
                return found
        return None

    def next_version(self, target: str) -> int:
        held = self.targets.get(target)
        return 1 if held is None else held.version + 1


def diff_policies(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changes from ``old`` to ``new``, one line per key (empty: nothing)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            lines.append(f"- {key}: {json.dumps(old[key], sort_keys=True)}")
        elif key not in old:
            lines.append(f"+ {key}: {json.dumps(new[key], sort_keys=True)}")
        elif old[key] != new[key]:
            was, now = json.dumps(old[key], sort_keys=True), json.dumps(new[key], sort_keys=True)
            lines.append(f"~ {key}: {was} -> {now}")
    return lines
