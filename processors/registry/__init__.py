"""The registry processor: lifecycle facts folded into the current record of every agent."""

from processors.registry.processor import RegistryProcessor
from processors.registry.state import AgentState, AgentStatus

__all__ = ["AgentState", "AgentStatus", "RegistryProcessor"]
