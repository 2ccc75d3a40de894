"""Times as people read them: one spelling of a moment for the CLI, the report and the demo.

Every time the mesh keeps is epoch milliseconds (UTC); what it prints is ISO 8601 in UTC with
a ``Z``, to the second (``2026-11-30T18:28:25Z``), so a time copied from one command's output
pastes into another's ``--from``/``--to``.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["utc_text"]


def utc_text(ms: int | None, missing: str = "-") -> str:
    """``ms`` as ``YYYY-MM-DDTHH:MM:SSZ``; ``missing`` for None."""
    if ms is None:
        return missing
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
