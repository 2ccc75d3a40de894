"""The operator's identity: the key the `mesh` CLI signs operator commands with.

Kept in ``<state dir>/keys/operator.key`` (owner-only). The processors accept operator
commands (certifications now, halts and resumes later) signed by the keys they are given.
"""

from __future__ import annotations

import getpass

from mesh.identity import AgentKey, load_or_create_key
from mesh.settings import Settings

__all__ = ["operator_key"]


def operator_key(settings: Settings) -> AgentKey:
    return load_or_create_key(
        settings.state_dir / "keys" / "operator.key", f"operator:{getpass.getuser()}"
    )
