"""`mesh approvals ls|show|approve|reject`: a person decides on tool calls that need one.

A tool the policy marks ``requires_approval`` runs only once an operator approved that exact
call (mesh.domain.approvals). ``show`` prints the complete canonical arguments, never cut;
``approve`` and ``reject`` sign the decision with this host's operator key, bound to the
request's agent, tool, arguments digest and chain, with an expiry (``--ttl``).
"""

from __future__ import annotations

import datetime as dt
import json
import time

import typer

from cli.common import console, reading, settings
from mesh.adapters.approvals import ApprovalLog, decide, read_approvals
from mesh.adapters.keyfiles import trust_anchors
from mesh.domain.approvals import Request
from mesh.errors import UnknownTargetError

app = typer.Typer(help="Human approvals of tool calls the policy marks requires_approval.")

_NOTE = typer.Option(..., "--note", help="Why (recorded and audited).")


def _read() -> ApprovalLog:
    with reading(settings()) as (where, codec):
        return read_approvals(where, codec, _anchors())


def _anchors() -> dict[str, bytes]:
    return dict(trust_anchors(settings()))


@app.command("ls")
def list_requests(
    every: bool = typer.Option(False, "--all", help="Also decided, used and expired ones."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per request, per line."),
) -> None:
    """Requests waiting for a decision (with --all: every request)."""
    now_ms = int(time.time() * 1000)
    shown = 0
    for request in sorted(_read().book.requests.values(), key=lambda r: r.requested_at_ms):
        state = request.state(now_ms)
        if not every and state != "pending":
            continue
        shown += 1
        if as_json:
            print(json.dumps(_view(request, state)))
            continue
        console.print(
            f"{request.request_id}  {state:<8} {request.agent_id} -> {request.tool} "
            f"(${request.cost_usd:.4f}) asked {_at(request.requested_at_ms)}"
            + (f"; {request.decision.lower()} by {request.decided_by}" if request.decision else "")
        )
    if not shown and not as_json:
        console.print("no approval requests" + ("" if every else " waiting"))


@app.command()
def show(request_id: str) -> None:
    """One request in full: the exact call, with its complete canonical arguments."""
    request = _find(request_id)
    print(json.dumps(_view(request, request.state(int(time.time() * 1000))), indent=2))


@app.command()
def approve(
    request_id: str,
    note: str = _NOTE,
    ttl: float = typer.Option(
        900.0, "--ttl", min=1, max=86_400, help="Seconds the approval stays usable (once)."
    ),
) -> None:
    """Approve exactly the call requested (single-use, expiring), signed by this operator."""
    _decide(request_id, True, note, ttl)


@app.command()
def reject(request_id: str, note: str = _NOTE) -> None:
    """Reject the call requested, signed by this operator."""
    _decide(request_id, False, note, 0.0)


def _decide(request_id: str, approve: bool, note: str, ttl: float) -> None:
    with reading(settings()) as (where, codec):
        decided = decide(where, codec, _anchors(), request_id, approve, note, ttl)
    console.print(
        f"{(decided.decision or '').lower()} {request_id}: {decided.agent_id} -> {decided.tool} "
        f"with arguments {decided.arguments_json} (sha256 {decided.arguments_digest[:16]}), "
        f"by {decided.decided_by}"
    )


def _find(request_id: str) -> Request:
    log = _read()
    request = log.book.requests.get(request_id)
    if request is None:
        ignored = (
            f"; {len(log.ignored)} approval step(s) could not be taken as they are, the last: "
            f"{log.ignored[-1]}"
            if log.ignored
            else ""
        )
        raise UnknownTargetError(
            f"no approval request {request_id!r}; `mesh approvals ls --all` lists them{ignored}"
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
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")
