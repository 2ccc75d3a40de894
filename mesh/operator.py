"""The operator's identity, and the mesh's own: the keys commands and checkpoints are signed with.

Kept in ``<state dir>/keys/operator.key`` (owner-only). The processors accept operator
commands (certifications now, halts and resumes later) signed by the keys they are given.
"""

from __future__ import annotations

import getpass

from mesh.identity import AgentKey, load_or_create_key
from mesh.settings import Settings

__all__ = ["MESH_KEY_ID", "mesh_key", "operator_key"]

#: The identity the mesh's own processors sign with (audit checkpoints, automatic halts).
MESH_KEY_ID = "mesh"


def operator_key(settings: Settings) -> AgentKey:
    return load_or_create_key(
        settings.state_dir / "keys" / "operator.key", f"operator:{getpass.getuser()}"
    )


def mesh_key(settings: Settings) -> AgentKey:
    """The mesh's own key, ``<state dir>/keys/mesh.key``: auditors verify checkpoints with its
    public half (``mesh audit verify`` reads it there, or takes ``--public-key``)."""
    return load_or_create_key(settings.state_dir / "keys" / "mesh.key", MESH_KEY_ID)
