"""The one exception tree of Agent Mesh.

Every error the mesh raises on purpose derives from :class:`MeshError`. Errors from client
libraries (confluent-kafka, aiokafka, fastavro, httpx) are translated at the boundary with
``raise SomeMeshError(...) from exc`` so callers only ever catch mesh errors.

Each message says what was wrong and what to do about it. ``retriable`` tells a caller
whether the same call may succeed later without anyone changing anything.

    MeshError
    ├── ConfigError                    broken MESH_* settings, bad policy or CLI input
    ├── SerdeError                     bytes that cannot become a record (dead-letter them)
    │   ├── MalformedMessageError      not Confluent wire format at all
    │   │   └── WrongMagicByteError    first byte is not 0
    │   ├── UnknownSchemaIdError       the schema id is not in the registry
    │   ├── TruncatedBodyError         the Avro body ends early or has trailing junk
    │   ├── OversizeMessageError       larger than MESH_MAX_MESSAGE_BYTES
    │   └── RecordEncodeError          a record does not fit its schema
    ├── IdentityError
    │   ├── BadSignatureError          the envelope signature does not verify
    │   ├── UnknownSenderError         no public key is known for the sender
    │   │   └── TableBehindError       not in a runtime table yet: caught up and retried once
    │   └── KeyFileError               an agent key file is unreadable or too open
    ├── SchemaRegistryError
    │   ├── IncompatibleSchemaError    registration refused by the compatibility rule
    │   ├── SubjectNotFoundError / VersionNotFoundError / SchemaNotFoundError
    │   ├── InvalidSchemaError         not a parseable Avro schema
    │   ├── RegistryFencedError        another registry writer took over (retriable)
    │   └── RegistryUnavailableError   the external registry did not answer (retriable)
    ├── SchemaCatalogueError           the schemas/ directory breaks its own rules
    ├── EventRejectedError             a well-formed event the domain refuses (dead-lettered)
    │   ├── RegistrationConflictError  same agent id, different key
    │   └── StaleWriteError            a context write against an outdated version
    ├── AgentRefusedError              the sidecar refuses what an agent asked (nothing was sent)
    │   ├── PolicyViolationError       outside the agent's declared policy
    │   ├── HaltedError                the agent is halted by the kill-switch or an operator
    │   ├── NotHaltedError             a resume of something that is not halted
    │   └── ControlUnavailableError    the sidecar cannot follow the control topic: fails closed
    ├── UnknownTargetError             a halt names no registered agent or capability (a typo?)
    ├── ProcessorError                 a processor cannot run (co-partitioning, a bug: fail loudly)
    │   ├── TransactionAbortedError    a commit failed: restore and go on (retriable)
    │   └── ProcessorFencedError       a newer instance took over: this one stops
    ├── KafkaUnavailableError          no broker answered (retriable)
    ├── TopicError
    │   ├── TopicConfigConflictError   an existing topic contradicts the catalogue
    │   └── TopicNotFoundError
    └── LocalKafkaError                the local broker could not be fetched, formatted or started
"""

from __future__ import annotations

__all__ = [
    "AgentRefusedError",
    "ConfigError",
    "ControlUnavailableError",
    "EventRejectedError",
    "HaltedError",
    "IdentityError",
    "IncompatibleSchemaError",
    "InvalidSchemaError",
    "KafkaUnavailableError",
    "KeyFileError",
    "LocalKafkaError",
    "MalformedMessageError",
    "MeshError",
    "NotHaltedError",
    "OversizeMessageError",
    "PolicyViolationError",
    "ProcessorError",
    "ProcessorFencedError",
    "RecipientError",
    "RecordEncodeError",
    "RegistrationConflictError",
    "RegistryFencedError",
    "RegistryUnavailableError",
    "RevokedKeyError",
    "SchemaCatalogueError",
    "SchemaNotFoundError",
    "SchemaRegistryError",
    "SerdeError",
    "StaleWriteError",
    "SubjectNotFoundError",
    "TableBehindError",
    "TopicConfigConflictError",
    "TopicError",
    "TopicNotFoundError",
    "TransactionAbortedError",
    "TruncatedBodyError",
    "UnknownSchemaIdError",
    "UnknownSenderError",
    "UnknownTargetError",
    "VersionNotFoundError",
    "WrongMagicByteError",
]


class MeshError(Exception):
    """Base of every error Agent Mesh raises on purpose."""

    retriable: bool = False
    #: A short stable code, used as the dead-letter reason and the REST error code.
    code: str = "mesh_error"


class ConfigError(MeshError):
    code = "config"


class SerdeError(MeshError):
    code = "serde"


class MalformedMessageError(SerdeError):
    code = "malformed"


class WrongMagicByteError(MalformedMessageError):
    code = "wrong_magic_byte"


class UnknownSchemaIdError(SerdeError):
    code = "unknown_schema_id"


class TruncatedBodyError(SerdeError):
    code = "truncated_body"


class OversizeMessageError(SerdeError):
    code = "oversize"


class RecordEncodeError(SerdeError):
    code = "record_encode"


class UnknownFieldError(SerdeError):
    """A record written with a schema that has a field the mesh's catalogue does not name, at
    any depth (mesh.adapters.serde.strict): refused, never silently dropped."""

    code = "unknown_field"


class IdentityError(MeshError):
    code = "identity"


class BadSignatureError(IdentityError):
    code = "bad_signature"


class UnknownSenderError(IdentityError):
    code = "unknown_sender"


class ReplayError(IdentityError):
    """A signed message produced again outside its time (a capture replayed), or stamped at an
    absurd time: refused, whatever its signature."""

    code = "replayed"


class RevokedKeyError(IdentityError):
    """The sender's key was revoked by an operator: the agent is quarantined."""

    code = "revoked_key"


class TableBehindError(UnknownSenderError):
    """A sender missing from a runtime-owned table that may not have caught up with it yet.

    Raised by a processor's read-only view of a global table; the runtime catches it, reads
    the table to its end and handles the record once more. A second miss is a plain
    UnknownSenderError, and the record is dead-lettered. Never escapes the runtime."""

    code = "unknown_sender"


class KeyFileError(IdentityError):
    code = "key_file"


class SchemaRegistryError(MeshError):
    code = "schema_registry"
    #: The Confluent REST error code for this error.
    http_status: int = 500
    confluent_code: int = 50001


class IncompatibleSchemaError(SchemaRegistryError):
    code = "incompatible_schema"
    http_status = 409
    confluent_code = 409


class InvalidSchemaError(SchemaRegistryError):
    code = "invalid_schema"
    http_status = 422
    confluent_code = 42201


class SubjectNotFoundError(SchemaRegistryError):
    code = "subject_not_found"
    http_status = 404
    confluent_code = 40401


class VersionNotFoundError(SchemaRegistryError):
    code = "version_not_found"
    http_status = 404
    confluent_code = 40402


class SchemaNotFoundError(SchemaRegistryError):
    code = "schema_not_found"
    http_status = 404
    confluent_code = 40403


class RegistryFencedError(SchemaRegistryError):
    code = "registry_fenced"
    retriable = True


class RegistryUnavailableError(SchemaRegistryError):
    code = "registry_unavailable"
    retriable = True


class SchemaCatalogueError(MeshError):
    code = "schema_catalogue"


class EventRejectedError(MeshError):
    code = "rejected"


class RegistrationConflictError(EventRejectedError):
    code = "registration_conflict"


class StaleWriteError(EventRejectedError):
    code = "stale_write"


class AgentRefusedError(MeshError):
    """The sidecar refused an agent's request; nothing left the process."""

    code = "refused"


class PolicyViolationError(AgentRefusedError):
    """A send or tool call outside the agent's policy (recipient, tool, budget, hops, size)."""

    code = "policy_violation"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ThrottledError(PolicyViolationError):
    """A fleet-wide rate limit is crossed for this kind of action: retry after
    ``retry_after_s`` (the agent slows down; nothing is halted)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__("throttled", message)
        self.retry_after_s = retry_after_s


class RecipientError(AgentRefusedError):
    """A send names no recipient, two, or one the mesh does not know (yet): a malformed or
    misaddressed request, not a policy violation. ``rule``: bad_recipient, unknown_recipient,
    no_recipient."""

    code = "recipient"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class HaltedError(AgentRefusedError):
    """The agent is halted: every send and tool-call report is refused until a resume."""

    code = "halted"


class NotHaltedError(AgentRefusedError):
    """A resume names an agent, capability or the fleet that is not halted: nothing is sent."""

    code = "not_halted"


class ControlUnavailableError(AgentRefusedError):
    """The sidecar cannot follow ``mesh.control.v2`` (its follower died or the broker has not
    answered within the bound), so it cannot know whether the agent is halted: it refuses sends
    and tool calls until it has caught up again (fail closed)."""

    code = "control_unavailable"
    retriable = True


class UnknownTargetError(MeshError):
    """An operator command names an agent or capability the registry does not know."""

    code = "unknown_target"


class ProcessorError(MeshError):
    code = "processor"


class TransactionAbortedError(ProcessorError):
    """A transaction did not commit (the broker timed out or went away). Nothing of it is
    visible; the instance restores its store from what did commit and carries on."""

    code = "transaction_aborted"
    retriable = True


class ProcessorFencedError(ProcessorError):
    """Another instance with the same transactional id (or a newer group generation) took over;
    this one must stop, or it would write as a zombie."""

    code = "fenced"


class KafkaUnavailableError(MeshError):
    code = "kafka_unavailable"
    retriable = True


class TopicError(MeshError):
    code = "topic"


class TopicConfigConflictError(TopicError):
    code = "topic_config_conflict"


class TopicNotFoundError(TopicError):
    code = "topic_not_found"


class LocalKafkaError(MeshError):
    code = "local_kafka"
