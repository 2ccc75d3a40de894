"""`mesh kafka up|status|down`: the local single-node broker."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import console, settings
from mesh.adapters.localkafka import local_kafka

app = typer.Typer(help="Run a local single-node Apache Kafka (KRaft) from the official jars.")

PortOption = typer.Option(None, "--port", min=1024, max=65534, help="Broker port (default 19092).")
DirOption = typer.Option(None, "--data-dir", help="Broker directory (default: state dir/kafka).")


TlsOption = typer.Option(
    False, "--tls", help="Also listen for TLS on port+2 (certificates made in data-dir/tls)."
)


SecureOption = typer.Option(
    False, "--secure", help="SASL/SCRAM clients only, ACLs enforced (see `mesh acl`)."
)


@app.command()
def up(
    port: int | None = PortOption,
    data_dir: Path | None = DirOption,
    tls: bool = TlsOption,
    secure: bool = SecureOption,
) -> None:
    """Start the broker (no-op if it runs) and print its bootstrap address."""
    broker = local_kafka(settings(), port=port, data_dir=data_dir, tls=tls, secure=secure)
    with console.status(f"starting Kafka on 127.0.0.1:{broker.port} ..."):
        status = broker.up()
    if status.started_in_s is None:
        console.print(f"Kafka already running (pid {status.pid})")
    else:
        console.print(f"Kafka started in {status.started_in_s:.1f}s (pid {status.pid})")
    console.print(f"bootstrap: {status.bootstrap}")
    if broker.secure:
        user, _ = broker.admin_credentials()
        console.print(
            f"secure: MESH_SECURITY_PROTOCOL=SASL_PLAINTEXT MESH_SASL_MECHANISM=SCRAM-SHA-512 "
            f"MESH_SASL_USERNAME={user} and its password from "
            f"{broker.directory / 'secure' / 'admin.json'}; then `mesh acl user` and "
            "`mesh acl apply`",
            soft_wrap=True,
        )
    if broker.tls_bootstrap is not None:
        console.print(
            f"TLS: MESH_BOOTSTRAP_SERVERS={broker.tls_bootstrap} MESH_SECURITY_PROTOCOL=SSL "
            f"MESH_SSL_CA_LOCATION={broker.ca_file}",
            soft_wrap=True,
        )


@app.command()
def status(port: int | None = PortOption, data_dir: Path | None = DirOption) -> None:
    """Say whether the local broker runs (exit 1 if not)."""
    current = local_kafka(settings(), port=port, data_dir=data_dir).status()
    if not current.running:
        console.print(f"Kafka is not running (directory {current.directory})")
        raise typer.Exit(1)
    console.print(f"Kafka running, pid {current.pid}, bootstrap {current.bootstrap}")


@app.command()
def down(port: int | None = PortOption, data_dir: Path | None = DirOption) -> None:
    """Stop the broker this directory started (and nothing else). Data is kept."""
    stopped = local_kafka(settings(), port=port, data_dir=data_dir).down()
    console.print("Kafka stopped" if stopped else "Kafka was not running")
