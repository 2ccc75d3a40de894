"""The schema registry: ports, the pure core, and its Kafka, HTTP and in-memory adapters."""

from mesh.registry.core import RegisteredSchema, RegistryState
from mesh.registry.port import SchemaRegistry

__all__ = ["RegisteredSchema", "RegistryState", "SchemaRegistry"]
