"""`mesh registry serve`: the embedded registry over the Confluent REST subset."""

from __future__ import annotations

import typer
import uvicorn

from cli.common import cluster, console, settings
from mesh.adapters.schemaregistry.http_server import registry_app
from mesh.adapters.schemaregistry.kafka import KafkaRegistry

app = typer.Typer(help="The embedded schema registry.")


@app.command()
def serve(
    port: int = typer.Option(8081, "--port", min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
) -> None:
    """Serve the registry on _mesh_schemas over the Confluent REST API."""
    current = settings()
    registry = KafkaRegistry(cluster(current))
    console.print(f"schema registry on http://{host}:{port} (log: {registry.topic})")
    try:
        uvicorn.run(registry_app(registry), host=host, port=port, log_level="warning")
    finally:
        registry.close()
