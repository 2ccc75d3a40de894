"""What telemetry reports: the kinds of ``mesh.telemetry.TelemetryEvent`` (its Avro enum
``TelemetryKind``), named once for the sidecar that reports, the registry that learns the
dependency map and acknowledgements from it, and the kill-switch that watches it."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TELEMETRY_SUBJECT", "THROTTLE_SUBJECT", "Kind"]

TELEMETRY_SUBJECT = "mesh.telemetry.TelemetryEvent"
#: A fleet-wide rate limit crossed for one kind of action (mesh.throttles.v1).
THROTTLE_SUBJECT = "mesh.killswitch.Throttle"


class Kind(StrEnum):
    TOOL_CALL = "TOOL_CALL"
    MODEL_CALL = "MODEL_CALL"
    MESSAGE_SENT = "MESSAGE_SENT"
    ERROR = "ERROR"
    HALT_ACK = "HALT_ACK"
    SEND_REFUSED = "SEND_REFUSED"
    UNKNOWN = "UNKNOWN"  # what a v1 reader makes of a later symbol
    RESUME_ACK = "RESUME_ACK"
    TOOL_PERMIT = "TOOL_PERMIT"  # v4: a single-use permit for one tool call was granted
