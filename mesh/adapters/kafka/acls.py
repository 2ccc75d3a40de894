"""Write the mesh's ACLs and SCRAM users to the cluster (mesh.domain.acls decides what).

Run as a principal allowed to alter ACLs and users (the admin of `mesh kafka up --secure`, or
the cluster's own). Creating a binding that exists already changes nothing, so applying again
is safe; a refusal by the broker is one KafkaUnavailableError naming it.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from mesh.adapters.kafka.config import base_config
from mesh.domain.acls import Grant, Resource
from mesh.errors import KafkaUnavailableError
from mesh.settings import Cluster

__all__ = ["apply_acls", "set_user"]

_TIMEOUT_S = 30.0
#: librdkafka calls the cluster resource BROKER.
_RESOURCES = {
    Resource.TOPIC: ResourceType.TOPIC,
    Resource.GROUP: ResourceType.GROUP,
    Resource.TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID,
    Resource.CLUSTER: ResourceType.BROKER,
}


def apply_acls(cluster: Cluster, grants: Iterable[Grant]) -> int:
    """Create every grant as an ALLOW binding; returns how many were sent."""
    bindings = [
        AclBinding(
            _RESOURCES[g.resource],
            g.name,
            ResourcePatternType[g.pattern.value],
            f"User:{g.principal}",
            "*",
            AclOperation[g.operation.value],
            AclPermissionType.ALLOW,
        )
        for g in grants
    ]
    admin = AdminClient(base_config(cluster))
    try:
        for future in admin.create_acls(bindings, request_timeout=_TIMEOUT_S).values():
            future.result()
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"the cluster refused the ACLs: {exc.args[0]}; run this as a principal allowed to "
            "alter ACLs (the admin of `mesh kafka up --secure`)"
        ) from exc
    return len(bindings)


def set_user(cluster: Cluster, user: str, password: str) -> None:
    """Create or change the SCRAM-SHA-512 credential of ``user``."""
    admin = AdminClient(base_config(cluster))
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
    )
    try:
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result()
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"the cluster refused the credential of {user!r}: {exc.args[0]}"
        ) from exc
