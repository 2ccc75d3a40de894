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
from mesh.errors import ConfigError, KeyFileError
from mesh.settings import Settings

__all__ = [
    "MESH_KEY_ID",
    "control_signers",
    "load_or_create_key",
    "mesh_anchor",
    "mesh_key",
    "operator_key",
    "replace_key",
    "trust_anchors",
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
    """Who may sign halts and resumes, for the mesh's own processes (the processors, on the
    host that holds the mesh's key): the mesh's and the operator's keys in the state directory
    (created on first use), and ``MESH_CONTROL_SIGNERS``."""
    signers = {k.agent_id: k.public_bytes for k in (mesh_key(settings), operator_key(settings))}
    signers.update(dict(settings.control_signers))
    return signers


def mesh_anchor(settings: Settings) -> bytes:
    """The mesh's public key as a trust anchor (audit checkpoints): from
    ``MESH_CONTROL_SIGNERS``, or this host's key file; never minted (see trust_anchors)."""
    configured = dict(settings.control_signers).get(MESH_SIGNER)
    if configured is not None:
        return configured
    if (settings.state_dir / "keys" / "mesh.key").exists() or settings.profile == "development":
        return mesh_key(settings).public_bytes
    raise ConfigError(
        "no trust anchor for the mesh's key: pass --public-key (the hex `mesh keys show` prints "
        "on the mesh's host) or set MESH_CONTROL_SIGNERS=mesh=HEX"
    )


def trust_anchors(settings: Settings) -> dict[str, bytes]:
    """Who may sign halts and resumes, for everyone else (sidecars, ``mesh halts``, ``mesh
    resume``): ``MESH_CONTROL_SIGNERS``, plus the mesh's and the operator's public keys where
    their key files already are in the state directory (a host that ran ``mesh up``).

    Never minted to fill a gap: a verifier with keys of its own would take the real halts for
    forgeries and ignore them (fail open). Without the mesh's key and at least one operator's,
    this raises ConfigError, except in the development profile (``MESH_PROFILE=development``),
    where the missing key files are created.
    """
    anchors = dict(settings.control_signers)
    keys = settings.state_dir / "keys"
    for name, load in (("mesh.key", mesh_key), ("operator.key", operator_key)):
        if (keys / name).exists() or settings.profile == "development":
            key = load(settings)
            anchors.setdefault(key.agent_id, key.public_bytes)
    operators = sorted(signer for signer in anchors if signer != MESH_SIGNER)
    if MESH_SIGNER not in anchors or not operators:
        missing = "the mesh's key" if MESH_SIGNER not in anchors else "an operator's key"
        raise ConfigError(
            f"no trust anchor for {missing}: without it, real halts would look forged and be "
            "ignored. Set MESH_CONTROL_SIGNERS to the public keys `mesh keys show` prints on "
            "the mesh's host (mesh=HEX,operator:NAME=HEX), or run `mesh up` here; "
            "MESH_PROFILE=development creates local keys"
        )
    return anchors


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


def replace_key(path: Path, key: AgentKey) -> None:
    """Write ``key`` to ``path`` (mode 0600) in place of the key there, atomically: a crash
    leaves the old key or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_suffix(".new")
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.seed())
    os.replace(staging, path)
