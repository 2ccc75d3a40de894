"""The operator's identity, and the mesh's own: the keys commands and checkpoints are signed with.

Kept in ``<state dir>/keys/operator.key`` (owner-only). The processors accept operator
commands (certifications) signed by the keys they are given.

Halts and resumes are obeyed only when signed by a control signer (:func:`control_signers`):
the mesh's key (the kill-switch's automatic halts), the operator's key, and the keys named in
``MESH_CONTROL_SIGNERS``. Anyone able to write to ``mesh.control.v1`` could otherwise resume a
runaway agent, or halt the fleet, with a command of their own.
"""

from __future__ import annotations

import getpass

from mesh.identity import AgentKey, load_or_create_key
from mesh.settings import Settings

__all__ = ["MESH_KEY_ID", "control_signers", "mesh_key", "operator_key"]

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


def control_signers(settings: Settings) -> dict[str, bytes]:
    """Who may sign halts and resumes, by signer id: the mesh's and the operator's keys in the
    state directory (created on first use), and ``MESH_CONTROL_SIGNERS``."""
    signers = {k.agent_id: k.public_bytes for k in (mesh_key(settings), operator_key(settings))}
    signers.update(dict(settings.control_signers))
    return signers
