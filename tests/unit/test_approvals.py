"""Human approvals (AISVS C9.2) folded as every reader folds them, with no broker."""

from __future__ import annotations

from typing import Any

from mesh.domain.approvals import ApprovalBook

OPS = ("operator:alice",)


def step(kind: str, **changes: Any) -> dict[str, Any]:
    return {
        "kind": kind, "request_id": "r1", "agent_id": "payer", "tool": "wire",
        "arguments_json": '{"amount":100,"to":"acme"}', "arguments_digest": "d1",
        "cost_usd": 0.0, "correlation_id": "c1", "expires_at": 10_000, "actor": "x",
        "note": None, "policy_hash": "p",
    } | changes  # fmt: skip


def requested() -> ApprovalBook:
    book = ApprovalBook()
    assert book.apply(step("REQUESTED"), "payer", OPS, at_ms=1_000) is None
    return book


def test_an_approval_binds_to_the_exact_call_and_is_used_once() -> None:
    book = requested()
    assert book.requests["r1"].state(2_000) == "pending"
    approved = step("APPROVED", arguments_json=None, expires_at=5_000)
    assert book.apply(approved, "operator:alice", OPS, at_ms=2_000) is None
    request = book.requests["r1"]
    assert request.state(4_000) == "approved" and request.decided_by == "operator:alice"
    assert book.open_request("payer", "wire", "d1", "c1", 4_000) == request
    assert book.open_request("payer", "wire", "d2", "c1", 4_000) is None  # other arguments
    assert book.open_request("payer", "wire", "d1", "c2", 4_000) is None  # another chain
    assert request.state(5_001) == "expired"  # the approval's own expiry
    assert book.apply(step("USED"), "payer", OPS, at_ms=4_500) is None
    assert book.requests["r1"].state(4_600) == "used"
    assert book.open_request("payer", "wire", "d1", "c1", 4_600) is None  # never twice


def test_forged_mismatched_and_second_decisions_change_nothing() -> None:
    book = requested()
    assert "not an operator" in (book.apply(step("APPROVED"), "payer", OPS, 2_000) or "")
    other_call = step("APPROVED", arguments_digest="d-evil")
    assert "another call" in (book.apply(other_call, "operator:alice", OPS, 2_000) or "")
    other_chain = step("APPROVED", correlation_id="c9")
    assert "another call" in (book.apply(other_chain, "operator:alice", OPS, 2_000) or "")
    assert book.requests["r1"].state(2_000) == "pending"
    assert book.apply(step("REJECTED"), "operator:alice", OPS, 2_000) is None
    assert "decided already" in (book.apply(step("APPROVED"), "operator:alice", OPS, 3_000) or "")
    assert book.requests["r1"].state(3_000) == "rejected"


def test_requests_are_the_agents_own_and_lapse_undecided() -> None:
    book = ApprovalBook()
    assert "signed by 'mallory'" in (book.apply(step("REQUESTED"), "mallory", OPS, 1_000) or "")
    book = requested()
    assert "made already" in (book.apply(step("REQUESTED"), "payer", OPS, 1_500) or "")
    assert book.requests["r1"].state(10_001) == "expired"
    assert "unknown request" in (book.apply(step("USED", request_id="r9"), "payer", OPS, 1) or "")
    assert "not its approved agent" in (book.apply(step("USED"), "payer", OPS, 1_000) or "")


def test_nobody_decides_their_own_request_and_only_named_approvers_count() -> None:
    """Issue 21: a signer trusted as an operator (MESH_CONTROL_SIGNERS may name any id) that
    is also the requesting agent cannot approve itself; an approval by an operator the policy
    does not name as an approver of the tool leaves the call open to be asked again."""
    book = requested()
    mine = step("APPROVED", arguments_json=None, expires_at=5_000)
    refused = book.apply(mine, "payer", (*OPS, "payer"), at_ms=2_000)
    assert refused is not None and "may not decide its own request" in refused
    assert book.requests["r1"].state(2_500) == "pending"
    assert book.apply(mine, "operator:alice", OPS, at_ms=3_000) is None
    cfo_only = frozenset({"operator:cfo"})
    assert book.open_request("payer", "wire", "d1", "c1", 4_000, cfo_only) is None
    assert book.open_request("payer", "wire", "d1", "c1", 4_000, frozenset(OPS)) is not None
    assert book.open_request("payer", "wire", "d1", "c1", 4_000) is not None  # any operator
