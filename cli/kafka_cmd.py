"""`mesh kafka up|status|down`: the local single broker, or a local cluster (``--brokers 3``)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import console, settings
from mesh.adapters.localkafka import local_cluster, local_kafka
from mesh.adapters.localkafka.cluster import LocalCluster

app = typer.Typer(
    help="Run a local Apache Kafka (KRaft) from the official jars: one broker or a cluster."
)

PortOption = typer.Option(None, "--port", min=1024, max=65534, help="Broker port (default 19092).")
DirOption = typer.Option(None, "--data-dir", help="Broker directory (default: state dir/kafka).")


TlsOption = typer.Option(
    False, "--tls", help="Also listen for TLS on port+2 (certificates made in data-dir/tls)."
)


SecureOption = typer.Option(
    False, "--secure", help="SASL/SCRAM clients only, ACLs enforced (see `mesh acl`)."
)


BrokersOption = typer.Option(
    1,
    "--brokers",
    min=1,
    max=9,
    help="Nodes: 1 (default) a single broker; 3 a cluster (data-dir/node-N, ports port+3*(N-1)).",
)


@app.command()
def up(
    port: int | None = PortOption,
    data_dir: Path | None = DirOption,
    tls: bool = TlsOption,
    secure: bool = SecureOption,
    brokers: int = BrokersOption,
) -> None:
    """Start the broker (no-op if it runs) and print its bootstrap address."""
    if brokers > 1:
        if tls or secure:
            raise typer.BadParameter(
                "--tls and --secure are for the single broker; a local cluster is plaintext",
                param_hint="--brokers",
            )
        _cluster_up(local_cluster(settings(), brokers, port=port, data_dir=data_dir))
        return
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
        protocol = "SASL_SSL" if broker.secure else "SSL"
        console.print(
            f"TLS: MESH_BOOTSTRAP_SERVERS={broker.tls_bootstrap} MESH_SECURITY_PROTOCOL={protocol} "
            f"MESH_SSL_CA_LOCATION={broker.ca_file}",
            soft_wrap=True,
        )


def _cluster_up(cluster: LocalCluster) -> None:
    with console.status(f"starting a {cluster.size}-node Kafka cluster ..."):
        status = cluster.up()
    pids = ", ".join(str(node.pid) for node in status.nodes)
    if status.started_in_s is None:
        console.print(f"Kafka cluster already running ({cluster.size} nodes, pids {pids})")
    else:
        console.print(
            f"Kafka cluster of {cluster.size} nodes started in {status.started_in_s:.1f}s "
            f"(pids {pids})"
        )
    console.print(f"bootstrap: {status.bootstrap}")
    replicas = min(cluster.size, 3)
    console.print(
        f"use: MESH_BOOTSTRAP_SERVERS={status.bootstrap} MESH_REPLICATION_FACTOR={replicas}",
        soft_wrap=True,
    )


@app.command()
def status(
    port: int | None = PortOption,
    data_dir: Path | None = DirOption,
    brokers: int = BrokersOption,
) -> None:
    """Say whether the local broker (or every node of the cluster) runs (exit 1 if not)."""
    if brokers > 1:
        cluster = local_cluster(settings(), brokers, port=port, data_dir=data_dir).status()
        for number, node in enumerate(cluster.nodes, start=1):
            state = f"running, pid {node.pid}" if node.running else "not running"
            console.print(f"node {number}: {state} ({node.directory})")
        if not cluster.running:
            raise typer.Exit(1)
        console.print(f"Kafka cluster running, bootstrap {cluster.bootstrap}")
        return
    current = local_kafka(settings(), port=port, data_dir=data_dir).status()
    if not current.running:
        console.print(f"Kafka is not running (directory {current.directory})")
        raise typer.Exit(1)
    console.print(f"Kafka running, pid {current.pid}, bootstrap {current.bootstrap}")


@app.command()
def down(port: int | None = PortOption, data_dir: Path | None = DirOption) -> None:
    """Stop the local broker and the local cluster this state directory started (and nothing
    else). Data is kept."""
    config = settings()
    stopped = local_kafka(config, port=port, data_dir=data_dir).down()
    nodes = local_cluster(config, None, port=port, data_dir=data_dir)
    count = 0 if nodes is None else nodes.down()
    if count:
        console.print(f"Kafka cluster stopped ({count} nodes)")
    if stopped:
        console.print("Kafka stopped")
    if not stopped and not count:
        console.print("Kafka was not running")
