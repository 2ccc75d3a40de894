"""AgentState <-> the ``mesh.registry.AgentRecord`` Avro record."""

from __future__ import annotations

from typing import Any

from mesh.domain.agents import AgentState, AgentStatus

__all__ = ["from_record", "to_record"]


def to_record(state: AgentState) -> dict[str, Any]:
    return {
        "agent_id": state.agent_id,
        "owner": state.owner,
        "version": state.version,
        "public_key": state.public_key,
        "agent_card_json": state.agent_card_json,
        "depends_on_agents": list(state.depends_on_agents),
        "depends_on_tools": list(state.depends_on_tools),
        "depends_on_topics": list(state.depends_on_topics),
        "observed_agents": list(state.observed_agents),
        "observed_tools": list(state.observed_tools),
        "status": state.status.value,
        "last_heartbeat": state.last_heartbeat_ms,
        "certifications": list(state.certifications),
        "updated_at": state.updated_at_ms,
        "key_serial": state.key_serial,
        "key_signature": state.key_signature,
        "instances": [
            {"instance_id": instance, "last_heartbeat": at} for instance, at in state.instances
        ],
        "environment": state.environment,
        "rollback_note": state.rollback_note,
        "certified_until": state.certified_until_ms,
        "certified_by": state.certified_by,
        "certified_versions": list(state.certified_versions),
        "gates_failing": list(state.gates_failing),
    }


def from_record(record: dict[str, Any]) -> AgentState:
    return AgentState(
        agent_id=record["agent_id"],
        owner=record["owner"],
        version=record["version"],
        public_key=bytes(record["public_key"]),
        agent_card_json=record["agent_card_json"],
        depends_on_agents=tuple(record["depends_on_agents"]),
        depends_on_tools=tuple(record["depends_on_tools"]),
        depends_on_topics=tuple(record["depends_on_topics"]),
        observed_agents=tuple(record["observed_agents"]),
        observed_tools=tuple(record["observed_tools"]),
        status=AgentStatus(record["status"]),
        last_heartbeat_ms=record["last_heartbeat"],
        certifications=tuple(record["certifications"]),
        updated_at_ms=record["updated_at"],
        key_serial=record.get("key_serial", 0),
        key_signature=bytes(record.get("key_signature") or b""),
        instances=tuple(
            (i["instance_id"], i["last_heartbeat"]) for i in record.get("instances") or ()
        ),
        environment=record.get("environment") or "staging",
        rollback_note=record.get("rollback_note") or "",
        certified_until_ms=record.get("certified_until"),
        certified_by=record.get("certified_by") or "",
        certified_versions=tuple(record.get("certified_versions") or ()),
        gates_failing=tuple(record.get("gates_failing") or ()),
    )
