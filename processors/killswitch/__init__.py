"""The kill-switch: sliding-window rules over telemetry that publish halts."""

from processors.killswitch.policy import Policy, load_policy
from processors.killswitch.processor import KillSwitchProcessor

__all__ = ["KillSwitchProcessor", "Policy", "load_policy"]
