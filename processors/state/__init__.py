"""The state projections processor: task events folded into each task's shared context."""

from mesh.domain.tasks import TaskState, apply
from processors.state.processor import StateProcessor

__all__ = ["StateProcessor", "TaskState", "apply"]
