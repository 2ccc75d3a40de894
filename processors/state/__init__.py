"""The state projections processor: task events folded into each task's shared context."""

from processors.state.processor import StateProcessor
from processors.state.state import TaskState, apply

__all__ = ["StateProcessor", "TaskState", "apply"]
