"""The audit processor: every message and event, appended once to a hash chain."""

from processors.audit.processor import AUDITED, AuditProcessor

__all__ = ["AUDITED", "AuditProcessor"]
