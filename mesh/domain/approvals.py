"""Human approvals of high-impact tool calls that cannot be forged or replayed (pure).

A tool the policy marks ``requires_approval`` gets a permit only with an operator's approval
of that exact call (OWASP AISVS C9.2). The steps are records on ``mesh.approvals.v1`` (kept
whole, audited), folded in order by every reader (:class:`ApprovalBook`): the sidecar, and
`mesh approvals`.

* ``REQUESTED``, signed by the agent: the tool, the **complete canonical arguments** (what the
  approver sees, never truncated), their digest, the cost, the chain (correlation id), and when
  the request lapses. Its ``request_id`` is a fresh UUID: the nonce every later step names.
* ``APPROVED`` or ``REJECTED``, signed by an operator (a trust anchor other than the mesh's
  key): it must repeat the request's agent, tool, arguments digest and chain, so a signature is
  bound to exactly that call in exactly that chain; the first decision is final. An approval
  carries its own expiry.
* ``USED``, signed by the agent when its sidecar grants the permit: an approval is
  single-use, also across restarts (the fold reads the use back).

Anything else (a decision signed by a non-operator, one that does not match its request, a
second decision, a step for an unknown request) changes nothing and is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = ["APPROVAL_SUBJECT", "ESCALATION", "ApprovalBook", "ApprovalKind", "Request"]

APPROVAL_SUBJECT = "mesh.approvals.ApprovalEvent"
#: The ``tool`` of a request that escalates a task to a person (human-in-the-loop): its
#: arguments are the task, the reason and the details, and the decision is the person's answer.
#: The same steps bind it: signed by an operator, single-use, expiring, never self-decided.
ESCALATION = "mesh.escalation"


class ApprovalKind(StrEnum):
    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    USED = "USED"


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    agent_id: str
    tool: str
    arguments_json: str
    arguments_digest: str
    cost_usd: float
    correlation_id: str | None
    expires_at_ms: int
    reason: str
    requested_at_ms: int
    policy_hash: str | None = None
    decision: str | None = None  # APPROVED or REJECTED
    decided_by: str | None = None
    note: str | None = None
    approval_expires_at_ms: int | None = None
    used: bool = False

    def state(self, now_ms: int) -> str:
        """pending, approved, rejected, used, or expired (undecided or unused in time)."""
        if self.used:
            return "used"
        if self.decision == ApprovalKind.REJECTED:
            return "rejected"
        if self.decision == ApprovalKind.APPROVED:
            expiry = self.approval_expires_at_ms or 0
            return "approved" if now_ms <= expiry else "expired"
        return "pending" if now_ms <= self.expires_at_ms else "expired"

    @property
    def is_escalation(self) -> bool:
        return self.tool == ESCALATION

    def matches(self, tool: str, digest: str, correlation_id: str | None) -> bool:
        return (self.tool, self.arguments_digest, self.correlation_id) == (
            tool,
            digest,
            correlation_id,
        )


class ApprovalBook:
    def __init__(self) -> None:
        self.requests: dict[str, Request] = {}

    def apply(
        self, record: Mapping[str, Any], signer: str, operators: Iterable[str], at_ms: int
    ) -> str | None:
        """Fold one step signed by ``signer``; returns why it changed nothing."""
        kind, request_id = str(record["kind"]), str(record["request_id"])
        held = self.requests.get(request_id)
        if kind == ApprovalKind.REQUESTED:
            return self._request(record, signer, request_id, held, at_ms)
        if held is None:
            return f"{kind} for unknown request {request_id}; ignored"
        if kind == ApprovalKind.USED:
            if signer != held.agent_id or held.decision != ApprovalKind.APPROVED:
                return f"USED of {request_id} by {signer!r}, not its approved agent; ignored"
            self.requests[request_id] = replace(held, used=True)
            return None
        if kind not in (ApprovalKind.APPROVED, ApprovalKind.REJECTED):
            return f"unknown step {kind!r} for {request_id}; ignored"
        return self._decide(record, signer, set(operators), held, kind)

    def _request(
        self,
        record: Mapping[str, Any],
        signer: str,
        request_id: str,
        held: Request | None,
        at_ms: int,
    ) -> str | None:
        if held is not None:
            return f"request {request_id} was made already; a second REQUESTED is ignored"
        if signer != record["agent_id"]:
            return f"request {request_id} for {record['agent_id']!r} signed by {signer!r}"
        self.requests[request_id] = Request(
            request_id,
            str(record["agent_id"]),
            str(record["tool"]),
            str(record.get("arguments_json") or "null"),
            str(record["arguments_digest"]),
            float(record.get("cost_usd") or 0.0),
            record.get("correlation_id"),
            int(record["expires_at"]),
            str(record.get("note") or ""),
            at_ms,
            record.get("policy_hash"),
        )
        return None

    def _decide(
        self,
        record: Mapping[str, Any],
        signer: str,
        operators: set[str],
        held: Request,
        kind: str,
    ) -> str | None:
        if signer not in operators:
            return f"a decision on {held.request_id} signed by {signer!r}, not an operator"
        if signer == held.agent_id:
            return f"{signer!r} may not decide its own request {held.request_id}; ignored"
        if held.decision is not None:
            return f"{held.request_id} was decided already ({held.decision}); ignored"
        bound = (record["agent_id"], record["tool"], record["arguments_digest"])
        if bound != (held.agent_id, held.tool, held.arguments_digest) or (
            record.get("correlation_id") != held.correlation_id
        ):
            return f"a decision on {held.request_id} for another call than the one requested"
        self.requests[held.request_id] = replace(
            held,
            decision=kind,
            decided_by=signer,
            note=record.get("note"),
            approval_expires_at_ms=int(record["expires_at"]),
        )
        return None

    def open_request(
        self,
        agent_id: str,
        tool: str,
        digest: str,
        correlation_id: str | None,
        now_ms: int,
        approvers: frozenset[str] | None = None,
    ) -> Request | None:
        """The newest request of this call not yet used, pending, approved or rejected; one
        approved by somebody not among ``approvers`` (None: anyone) is not open: it can never
        be used, and the call is asked for again."""
        found = [
            r
            for r in self.requests.values()
            if r.agent_id == agent_id
            and r.matches(tool, digest, correlation_id)
            and r.state(now_ms) in ("pending", "approved", "rejected")
            and not (r.decision is not None and not may_decide(r.decided_by, approvers))
        ]
        return max(found, key=lambda r: r.requested_at_ms, default=None)


def may_decide(operator: str | None, approvers: frozenset[str] | None) -> bool:
    """Whether ``operator`` may approve the tool (``approvers`` from the policy in force;
    None: any operator)."""
    return approvers is None or operator in approvers
