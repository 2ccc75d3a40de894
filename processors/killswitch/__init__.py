"""The kill-switch: sliding-window rules over telemetry that publish halts."""

from processors.killswitch.policy import Policy, load_policy
from processors.killswitch.task import KillSwitchTask

__all__ = ["KillSwitchTask", "Policy", "load_policy"]
