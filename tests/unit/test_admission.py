"""The receiving side's own checks (sidecar.admission), with no broker."""

from __future__ import annotations

import pytest

from mesh.domain.envelope import new_envelope
from mesh.errors import PolicyViolationError, ReplayError
from sidecar.admission import check_replay, check_sender_policy
from sidecar.policy import AgentPolicy

MADE = new_envelope("alice", "bob")._replace(created_at_ms=1_000_000)


def test_a_message_appended_long_after_it_was_made_is_a_replay() -> None:
    check_replay(MADE, 1_000_000 + 300_000, now_ms=0, max_skew_ms=300_000)  # at the bound
    with pytest.raises(ReplayError, match=r"\+300\.0s apart \(bound 300s\)"):
        check_replay(MADE, 1_000_000 + 300_001, now_ms=0, max_skew_ms=300_000)
    with pytest.raises(ReplayError, match=r"-400\.0s apart"):  # stamped in the future
        check_replay(MADE, 600_000, now_ms=0, max_skew_ms=300_000)


def test_without_an_append_time_only_a_far_future_creation_is_refused() -> None:
    check_replay(MADE, None, now_ms=5_000_000, max_skew_ms=300_000)  # old: cannot tell
    with pytest.raises(ReplayError, match="in the future"):
        check_replay(MADE, None, now_ms=600_000, max_skew_ms=300_000)


def test_the_senders_operator_policy_binds_it_on_receipt() -> None:
    only_carol = AgentPolicy(allowed_recipients=frozenset({"carol"}))
    check_sender_policy(MADE, "carol", only_carol, "* v1")
    check_sender_policy(MADE, "bob", AgentPolicy(), "* v1")  # any recipient
    check_sender_policy(MADE, "bob", None, "none")
    with pytest.raises(PolicyViolationError, match="went around its own sidecar") as refused:
        check_sender_policy(MADE, "bob", only_carol, "alice v2 abc")
    assert refused.value.rule == "recipient_not_allowed"


def test_a_hop_beyond_the_senders_limit_is_refused_on_receipt() -> None:
    deep = MADE._replace(hop_count=11)
    check_sender_policy(MADE._replace(hop_count=10), "bob", AgentPolicy(), "* v1")  # at it
    with pytest.raises(PolicyViolationError, match="hop 11 of a chain") as refused:
        check_sender_policy(deep, "bob", AgentPolicy(), "* v1")
    assert refused.value.rule == "hop_limit"
