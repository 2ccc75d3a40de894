"""The audit processor: every message and event, appended once to a hash chain."""

from processors.audit.task import AUDITED, AuditTask

__all__ = ["AUDITED", "AuditTask"]
