"""The registry processor: lifecycle facts folded into the current record of every agent."""

from mesh.domain.agents import AgentState, AgentStatus
from processors.registry.processor import RegistryProcessor

__all__ = ["AgentState", "AgentStatus", "RegistryProcessor"]
