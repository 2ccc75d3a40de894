"""The ACL plan from the topic catalogue (mesh.domain.acls), with no broker."""

from __future__ import annotations

from mesh.domain.acls import PROTECTED, Grant, Op, Pattern, Resource, plan_acls


def ops(grants: list[Grant], who: str, topic: str) -> set[Op]:
    """The operations ``who`` holds on ``topic`` (literal or by a prefix of it)."""
    return {
        g.operation
        for g in grants
        if g.principal == who
        and g.resource is Resource.TOPIC
        and (g.name == topic or (g.pattern is Pattern.PREFIXED and topic.startswith(g.name)))
    }


def test_an_agent_writes_inboxes_and_its_reports_and_reads_only_its_own_inbox() -> None:
    grants = plan_acls("p.", "procs", ["ops"], ["alice", "bob"])
    assert len(grants) == len(set(grants))  # each binding once
    assert Op.WRITE in ops(grants, "alice", "p.mesh.inbox.bob.v1")
    assert Op.READ in ops(grants, "alice", "p.mesh.inbox.alice.v1")
    assert Op.READ not in ops(grants, "alice", "p.mesh.inbox.bob.v1")
    for topic in PROTECTED:
        assert Op.WRITE not in ops(grants, "alice", f"p.{topic}"), topic
        assert Op.ALL not in ops(grants, "alice", f"p.{topic}"), topic
    assert Op.WRITE in ops(grants, "alice", "p.mesh.telemetry.v1")


def test_only_operators_write_control_and_the_processors_hold_everything() -> None:
    grants = plan_acls("", "procs", ["ops"], ["alice"])
    assert Op.WRITE in ops(grants, "ops", "mesh.control.v2")
    assert Op.WRITE not in ops(grants, "ops", "mesh.audit.v1")
    assert Op.ALL in ops(grants, "procs", "mesh.audit.v1")
    assert any(g.resource is Resource.TRANSACTIONAL_ID for g in grants if g.principal == "procs")
