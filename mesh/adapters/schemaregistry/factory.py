"""Pick the registry the settings ask for: external over REST, or the embedded one on Kafka."""

from __future__ import annotations

from mesh.adapters.kafka.source import resolve
from mesh.adapters.schemaregistry.http_client import HttpRegistry
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.settings import Cluster, Settings

__all__ = ["open_registry"]


def open_registry(settings: Settings, cluster: Cluster | None = None) -> SchemaRegistry:
    """``MESH_SCHEMA_REGISTRY_URL`` if set, else the embedded registry on ``_mesh_schemas``."""
    if settings.schema_registry_url:
        return HttpRegistry(settings.schema_registry_url, settings.schema_registry_auth)
    return KafkaRegistry(cluster or resolve(settings))
