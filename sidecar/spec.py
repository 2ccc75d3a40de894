"""What an agent declares about itself when it attaches: identity, card, dependencies, policy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from mesh.domain.gates import ENVIRONMENTS, STAGING
from mesh.errors import ConfigError
from sidecar.policy import AgentPolicy

__all__ = ["AgentSpec"]

_AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class AgentSpec:
    agent_id: str
    capabilities: tuple[str, ...] = ()
    description: str = ""
    owner: str = "platform"
    version: str = "1"
    depends_on_agents: tuple[str, ...] = ()
    depends_on_tools: tuple[str, ...] = ()
    depends_on_topics: tuple[str, ...] = ()
    policy: AgentPolicy = field(default_factory=AgentPolicy)
    #: ``staging`` or ``production``: a message to a production agent needs a sender certified
    #: for production (mesh.domain.gates)
    environment: str = STAGING
    rollback_note: str = ""  # the owner's plan to go back (evidence for the rollback gate)

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ConfigError(
                f"environment {self.environment!r} is not one of {', '.join(ENVIRONMENTS)}"
            )
        if not _AGENT_ID.fullmatch(self.agent_id):
            raise ConfigError(
                f"agent id {self.agent_id!r} is not allowed: use 1-100 letters, digits, '.', "
                "'_' or '-' (it names the agent's inbox topic)"
            )

    def agent_card(self, profile: str = "production") -> dict[str, Any]:
        """The A2A Agent Card: each capability is a skill the mesh can route by. ``x-mesh``
        records the sidecar's profile, so the registry shows an agent whose own policy may
        stand in for an operator's (development) as such."""
        return {
            "name": self.agent_id,
            "description": self.description or f"agent {self.agent_id}",
            "version": self.version,
            "provider": {"organization": self.owner},
            "defaultInputModes": ["text", "data"],
            "defaultOutputModes": ["text", "data"],
            "skills": [{"id": c, "name": c, "tags": [c]} for c in self.capabilities],
            "x-mesh": {"profile": profile},
        }

    def registration(self, public_key: bytes, profile: str = "production") -> dict[str, Any]:
        """The body of ``mesh.registry.AgentRegistered``."""
        return {
            "agent_id": self.agent_id,
            "owner": self.owner,
            "version": self.version,
            "public_key": public_key,
            "agent_card_json": orjson.dumps(self.agent_card(profile)).decode(),
            "depends_on_agents": list(self.depends_on_agents),
            "depends_on_tools": list(self.depends_on_tools),
            "depends_on_topics": list(self.depends_on_topics),
            "policy_json": self.policy.to_json(),
            "environment": self.environment,
            "rollback_note": self.rollback_note or None,
        }
