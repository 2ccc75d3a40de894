"""`mesh keys show|list|revoke|rotate`: the trust anchors, and the agent keys the mesh vouches for.

Sidecars and verifying commands on other hosts trust only the public keys they are given
(``MESH_CONTROL_SIGNERS``); ``show`` prints them, with fingerprints to compare by eye, from the
host that holds the keys (the one that ran ``mesh up``). It never creates a key.

``list`` prints the key directory (``mesh.keys.v1``); ``revoke`` and ``rotate`` are operator
commands, confirmed once the registry's countersigned statement is read back
(docs/security/keys.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer

from cli.common import cluster, console, reading, settings
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.keycommands import revoke_key, rotate_key
from mesh.adapters.keyfiles import load_or_create_key, mesh_anchor, mesh_key, operator_key
from mesh.domain.keys import KeyStatement

app = typer.Typer(help="Trust anchors, and the agent keys the mesh vouches for.")
_WAIT = typer.Option(10.0, "--wait", min=0.5, max=600, help="Seconds to wait for the registry.")


def fingerprint(public: bytes) -> str:
    """SHA-256 of the raw public key, first 16 bytes, as colon-separated hex."""
    digest = hashlib.sha256(public).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


@app.command()
def show(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per key, per line."),
) -> None:
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
        if as_json:
            print(json.dumps({"id": key.agent_id, "public_key": public.hex(),
                              "fingerprint": fingerprint(public)}))  # fmt: skip
            continue
        console.print(f"{key.agent_id}: {public.hex()}  (fingerprint {fingerprint(public)})")
    if as_json:
        return
    signers = ",".join(f"{key.agent_id}={key.public_bytes.hex()}" for key in found)
    console.print(f"MESH_CONTROL_SIGNERS={signers}")


def _line(statement: KeyStatement) -> str:
    return (
        f"{statement.agent_id}: {statement.status.value.lower()} key "
        f"{fingerprint(statement.public_key)} (serial {statement.serial}): {statement.reason}"
    )


@app.command("list")
def list_keys(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per agent, per line."),
) -> None:
    """The agent keys the mesh vouches for (mesh.keys.v1), and what was ignored there."""
    current = settings()
    with reading(current) as (where, codec):
        table = read_keys(where, codec.serde, mesh_anchor(current))
    if as_json:
        for agent_id, statement in sorted(table.current.items()):
            print(json.dumps({
                "agent_id": agent_id,
                "status": statement.status.value,
                "serial": statement.serial,
                "public_key": statement.public_key.hex(),
                "fingerprint": fingerprint(statement.public_key),
                "reason": statement.reason,
            }))  # fmt: skip
        return
    if not table.current:
        console.print("no agent keys yet")
    for _, statement in sorted(table.current.items()):
        console.print(_line(statement))


@app.command()
def revoke(
    agent: str = typer.Argument(..., help="The agent whose key is revoked."),
    reason: str = typer.Option(..., "--reason", help="Why, in words (recorded and audited)."),
    wait: float = _WAIT,
) -> None:
    """Revoke an agent's key: its messages are refused everywhere and it is quarantined."""
    current = settings()
    statement = revoke_key(cluster(current), agent, reason, wait)
    console.print(f"revoked: {_line(statement)}")


@app.command()
def rotate(
    agent: str = typer.Argument(..., help="The agent whose key is replaced."),
    key_file: Path = typer.Option(
        ...,
        "--key-file",
        help="The agent's new key (a raw 32-byte seed, mode 0600); created if missing.",
    ),
    reason: str = typer.Option("rotated by an operator", "--reason", help="Why, in words."),
    wait: float = _WAIT,
) -> None:
    """Move an agent to a new key (also ends a quarantine); install the key file on its host."""
    current = settings()
    new_key = load_or_create_key(key_file, agent)
    statement = rotate_key(cluster(current), agent, new_key, reason, wait)
    console.print(f"rotated: {_line(statement)}; the agent's sidecar must now use {key_file}")
