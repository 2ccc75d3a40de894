"""The schema registry: ports, the pure core, and its Kafka, HTTP and in-memory adapters."""

from mesh.adapters.schemaregistry.core import RegisteredSchema, RegistryState
from mesh.adapters.schemaregistry.port import SchemaRegistry

__all__ = ["RegisteredSchema", "RegistryState", "SchemaRegistry"]
