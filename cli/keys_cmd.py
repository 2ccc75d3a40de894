"""`mesh keys show`: the trust anchors of this mesh, to configure everywhere else.

Sidecars and verifying commands on other hosts trust only the public keys they are given
(``MESH_CONTROL_SIGNERS``); this prints them, with fingerprints to compare by eye, from the
host that holds the keys (the one that ran ``mesh up``). It never creates a key.
"""

from __future__ import annotations

import hashlib

import typer

from cli.common import console, settings
from mesh.adapters.keyfiles import mesh_key, operator_key

app = typer.Typer(help="The mesh's trust anchors (public keys and fingerprints).")


def fingerprint(public: bytes) -> str:
    """SHA-256 of the raw public key, first 16 bytes, as colon-separated hex."""
    digest = hashlib.sha256(public).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


@app.command()
def show() -> None:
    """Print the mesh's and the operator's public keys and the MESH_CONTROL_SIGNERS line."""
    current = settings()
    keys = current.state_dir / "keys"
    found = [
        load(current)
        for name, load in (("mesh.key", mesh_key), ("operator.key", operator_key))
        if (keys / name).exists()
    ]
    if not found:
        console.print(f"no keys in {keys}: run `mesh up` on the mesh's host, then this there")
        raise typer.Exit(1)
    for key in found:
        public = key.public_bytes
        console.print(f"{key.agent_id}: {public.hex()}  (fingerprint {fingerprint(public)})")
    signers = ",".join(f"{key.agent_id}={key.public_bytes.hex()}" for key in found)
    console.print(f"MESH_CONTROL_SIGNERS={signers}")
