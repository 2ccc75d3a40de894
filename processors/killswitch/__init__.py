"""The kill-switch: sliding-window rules over telemetry that publish halts."""

from processors.killswitch.job import KillSwitchJob
from processors.killswitch.policy import Policy, load_policy

__all__ = ["KillSwitchJob", "Policy", "load_policy"]
