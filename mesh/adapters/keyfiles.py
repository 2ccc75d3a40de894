"""Key files: each agent's, the operator's and the mesh's own Ed25519 keys on disk (owner-only).

Kept in ``<state dir>/keys/`` with mode 0600: ``AGENT.key`` for each agent's sidecar,
``operator.key`` and ``mesh.key``. The processors accept operator commands (certifications)
signed by the keys they are given.

Halts and resumes are obeyed only when signed by a control signer (:func:`control_signers`):
the mesh's key (the kill-switch's automatic halts), the operator's key, and the keys named in
``MESH_CONTROL_SIGNERS``. Anyone able to write to ``mesh.control.v2`` could otherwise resume a
runaway agent, or halt the fleet, with a command of their own.
"""

from __future__ import annotations

import getpass
import os
import stat
from pathlib import Path

from mesh.domain.control import MESH_SIGNER
from mesh.domain.identity import AgentKey
from mesh.errors import KeyFileError
from mesh.settings import Settings

__all__ = [
    "MESH_KEY_ID",
    "control_signers",
    "load_or_create_key",
    "mesh_key",
    "operator_key",
]

#: The identity the mesh's own processors sign with (audit checkpoints, automatic halts).
MESH_KEY_ID = MESH_SIGNER


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


def load_or_create_key(path: Path, agent_id: str) -> AgentKey:
    """Load the agent's key from ``path``, creating it (mode 0600) on first run.

    A key file readable by group or others is refused: anyone who can read it can act as the
    agent.
    """
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"{path} has mode {mode:o}; a private key must be owner-only. Run: chmod 600 {path}"
            )
        raw = path.read_bytes()
        if len(raw) != 32:
            raise KeyFileError(f"{path} holds {len(raw)} bytes, not a raw 32-byte Ed25519 key")
        return AgentKey.from_seed(agent_id, raw)
    key = AgentKey.generate(agent_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.seed())
    return key
