"""The audit processor: every message and event, appended once to a hash chain."""

from processors.audit.job import AUDITED, AuditJob

__all__ = ["AUDITED", "AuditJob"]
