"""`mesh approvals ls|show|approve|reject`: a person decides on tool calls that need one; and
`mesh escalations ls|show|approve|reject`: a person answers a task an agent escalated.

A tool the policy marks ``requires_approval`` runs only once an operator approved that exact
call (mesh.domain.approvals). ``show`` prints the complete canonical arguments, never cut;
``approve`` and ``reject`` sign the decision with this host's operator key, bound to the
request's agent, tool, arguments digest and chain, with an expiry (``--ttl``). An escalation
is the same kind of request (its tool ``mesh.escalation``, its arguments the task, the reason
and the details), so an answer is bound, signed and single-use the same way.
"""

from __future__ import annotations

import json
import time

import typer

from cli.common import console, reading, settings
from mesh.adapters.approvals import ApprovalLog, decide, read_approvals
from mesh.adapters.keyfiles import trust_anchors
from mesh.domain.approvals import Request
from mesh.domain.moments import utc_text
from mesh.errors import UnknownTargetError

app = typer.Typer(help="Human approvals of tool calls the policy marks requires_approval.")
escalations_app = typer.Typer(help="Tasks agents escalated to a person: list, show, answer.")

_NOTE = typer.Option(..., "--note", help="Why (recorded and audited).")


def _read() -> ApprovalLog:
    with reading(settings()) as (where, codec):
        return read_approvals(where, codec, _anchors())


def _anchors() -> dict[str, bytes]:
    return dict(trust_anchors(settings()))


_ALL = typer.Option(False, "--all", help="Also decided, used and expired ones.")
_JSON = typer.Option(False, "--json", help="One JSON object per request, per line.")


@app.command("ls")
def list_requests(every: bool = _ALL, as_json: bool = _JSON) -> None:
    """Requests waiting for a decision (with --all: every request)."""
    _list(every, as_json, escalations=False)


@escalations_app.command("ls")
def list_escalations(every: bool = _ALL, as_json: bool = _JSON) -> None:
    """Escalations waiting for a person's answer (with --all: every escalation)."""
    _list(every, as_json, escalations=True)


def _list(every: bool, as_json: bool, escalations: bool) -> None:
    now_ms = int(time.time() * 1000)
    shown = 0
    requests = [r for r in _read().book.requests.values() if r.is_escalation == escalations]
    for request in sorted(requests, key=lambda r: r.requested_at_ms):
        state = request.state(now_ms)
        if not every and state != "pending":
            continue
        shown += 1
        if as_json:
            print(json.dumps(_view(request, state)))
            continue
        decided = (
            f"; {request.decision.lower()} by {request.decided_by}" if request.decision else ""
        )
        if escalations:
            asked = json.loads(request.arguments_json)
            what = f"task {asked.get('task_id')}: {asked.get('reason')}"
        else:
            what = f"{request.tool} (${request.cost_usd:.4f})"
        console.print(
            f"{request.request_id}  {state:<8} {request.agent_id} -> {what} asked "
            f"{_at(request.requested_at_ms)}{decided}"
        )
    if not shown and not as_json:
        kind = "escalations" if escalations else "approval requests"
        console.print(f"no {kind}" + ("" if every else " waiting"))


_TTL = typer.Option(
    900.0, "--ttl", min=1, max=86_400, help="Seconds the approval stays usable (once)."
)


@app.command()
def show(request_id: str) -> None:
    """One request in full: the exact call, with its complete canonical arguments."""
    request = _find(request_id, escalations=False)
    print(json.dumps(_view(request, request.state(int(time.time() * 1000))), indent=2))


@app.command()
def approve(request_id: str, note: str = _NOTE, ttl: float = _TTL) -> None:
    """Approve exactly the call requested (single-use, expiring), signed by this operator."""
    _decide(request_id, True, note, ttl, escalations=False)


@app.command()
def reject(request_id: str, note: str = _NOTE) -> None:
    """Reject the call requested, signed by this operator."""
    _decide(request_id, False, note, 0.0, escalations=False)


@escalations_app.command("show")
def show_escalation(escalation_id: str) -> None:
    """One escalation in full: the task, the reason and the details, never cut."""
    request = _find(escalation_id, escalations=True)
    print(json.dumps(_view(request, request.state(int(time.time() * 1000))), indent=2))


@escalations_app.command("approve")
def approve_escalation(escalation_id: str, note: str = _NOTE, ttl: float = _TTL) -> None:
    """Answer yes: the waiting agent goes on (signed by this operator, used once)."""
    _decide(escalation_id, True, note, ttl, escalations=True)


@escalations_app.command("reject")
def reject_escalation(escalation_id: str, note: str = _NOTE) -> None:
    """Answer no: the waiting agent is told, with the note (signed by this operator)."""
    _decide(escalation_id, False, note, 0.0, escalations=True)


def _decide(request_id: str, approve: bool, note: str, ttl: float, escalations: bool) -> None:
    _find(request_id, escalations)  # an approval is not answered as an escalation, nor back
    with reading(settings()) as (where, codec):
        decided = decide(where, codec, _anchors(), request_id, approve, note, ttl)
    console.print(
        f"{(decided.decision or '').lower()} {request_id}: {decided.agent_id} -> {decided.tool} "
        f"with arguments {decided.arguments_json} (sha256 {decided.arguments_digest[:16]}), "
        f"by {decided.decided_by}"
    )


def _find(request_id: str, escalations: bool) -> Request:
    log = _read()
    request = log.book.requests.get(request_id)
    listing = "escalations" if escalations else "approvals"
    if request is None or request.is_escalation != escalations:
        ignored = (
            f"; {len(log.ignored)} approval step(s) could not be taken as they are, the last: "
            f"{log.ignored[-1]}"
            if log.ignored
            else ""
        )
        raise UnknownTargetError(
            f"no {'escalation' if escalations else 'approval request'} {request_id!r}; `mesh "
            f"{listing} ls --all` lists them{ignored}"
        )
    return request


def _view(request: Request, state: str) -> dict[str, object]:
    return {
        "request_id": request.request_id,
        "state": state,
        "agent_id": request.agent_id,
        "tool": request.tool,
        "arguments": json.loads(request.arguments_json),
        "arguments_sha256": request.arguments_digest,
        "cost_usd": request.cost_usd,
        "chain": request.correlation_id,
        "asked_at": _at(request.requested_at_ms),
        "expires_at": _at(request.expires_at_ms),
        "policy_hash": request.policy_hash,
        "decision": request.decision,
        "decided_by": request.decided_by,
        "note": request.note,
        "approval_expires_at": _at(request.approval_expires_at_ms),
        "used": request.used,
    }


def _at(ms: int | None) -> str | None:
    return None if ms is None else utc_text(ms)  # JSON null for a time not set
