"""Settings: one immutable object, read once from ``MESH_*`` environment variables and passed in.

Nothing in the mesh reads the environment anywhere else. A bad value raises
:class:`~mesh.errors.ConfigError` naming the variable, the value and what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from mesh.errors import ConfigError

__all__ = ["ENV_VARS", "Cluster", "Settings", "load_settings"]

#: Every variable the mesh reads, with what it means. The README's table is generated from this.
ENV_VARS: dict[str, str] = {
    "MESH_BOOTSTRAP_SERVERS": "An existing Kafka cluster (host:port,...). Unset: the local broker.",
    "MESH_SCHEMA_REGISTRY_URL": "An external Confluent-compatible registry. Unset: embedded.",
    "MESH_SCHEMA_REGISTRY_AUTH": "user:password for the external registry's basic auth.",
    "MESH_TOPIC_PREFIX": "Prefix for every mesh topic, to share one cluster (default: none).",
    "MESH_STATE_DIR": "Keys, logs and the local broker (default ~/.local/state/agent-mesh).",
    "MESH_KAFKA_PORT": "Port of the local broker (default 19092; the controller uses port+1).",
    "MESH_KAFKA_VERSION": "Apache Kafka version fetched from Maven Central (default 4.1.1).",
    "MESH_KAFKA_HEAP": "JVM heap of the local broker (default 1g).",
    "MESH_PARTITIONS": "Partitions of the keyed mesh topics (default 6).",
    "MESH_REPLICATION_FACTOR": "Replication factor of mesh topics (default 1; 3 in production).",
    "MESH_MIN_INSYNC_REPLICAS": (
        "Replicas that must have a write before it is acknowledged, set on every mesh topic "
        "created (default: 1, or 2 from a replication factor of 3 on)."
    ),
    "MESH_SECURITY_PROTOCOL": "Kafka security.protocol, e.g. SASL_SSL (default PLAINTEXT).",
    "MESH_SASL_MECHANISM": "Kafka sasl.mechanism, e.g. PLAIN or SCRAM-SHA-512.",
    "MESH_SASL_USERNAME": "Kafka SASL username.",
    "MESH_SASL_PASSWORD": "Kafka SASL password.",
    "MESH_SSL_CA_LOCATION": (
        "PEM file of the CA that signed the brokers' certificates (SSL and SASL_SSL); every "
        "client, the sidecars' included, verifies the brokers with it."
    ),
    "MESH_SSL_CERTIFICATE_LOCATION": "PEM client certificate, for brokers that require mTLS.",
    "MESH_SSL_KEY_LOCATION": "PEM private key of that client certificate (unencrypted).",
    "MESH_MAX_MESSAGE_BYTES": "Largest message the mesh accepts (default 1048576).",
    "MESH_CONTROL_SIGNERS": (
        "More keys trusted to sign halts and resumes: ID=HEX,... (Ed25519 public keys, 64 hex "
        "digits). Always trusted: the mesh and operator keys in the state directory."
    ),
    "MESH_PROFILE": (
        "production (default): sidecars and verifying commands refuse to start without trust "
        "anchors, and a sidecar with no operator policy in force denies everything; "
        "development: missing mesh and operator keys are created on first use, and an agent's "
        "own policy stands in while no operator policy is in force."
    ),
    "MESH_MAX_CLOCK_SKEW_MS": (
        "A message appended to an inbox this far from when it was made is refused as a replay "
        "(default 300000)."
    ),
    "MESH_CONTROL_STALE_MS": (
        "A sidecar that cannot confirm it is up to date with mesh.control.v2 for this long "
        "refuses sends and tool calls until it is (fail closed; default 5000)."
    ),
}

DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_VERSION = "4.1.1"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable about one mesh process. Build it with :func:`load_settings`."""

    bootstrap_servers: str | None = None
    schema_registry_url: str | None = None
    schema_registry_auth: str | None = None
    topic_prefix: str = ""
    state_dir: Path = field(default_factory=lambda: _default_state_dir({}))
    kafka_port: int = DEFAULT_KAFKA_PORT
    kafka_version: str = DEFAULT_KAFKA_VERSION
    kafka_heap: str = "1g"
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int | None = None  # None: insync_replicas() derives it
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    max_message_bytes: int = 1_048_576
    control_signers: tuple[tuple[str, bytes], ...] = ()  # (signer id, Ed25519 public key)
    control_stale_ms: int = 5_000
    max_clock_skew_ms: int = 300_000
    profile: str = "production"  # or "development" (see keyfiles.trust_anchors)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (used by CLI options and tests)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def insync_replicas(self) -> int:
        """``min.insync.replicas`` of the mesh's topics: as set, else 2 once there are 3
        replicas (a write survives the loss of one broker and the topic stays writable
        while one is down), else 1."""
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return 2 if self.replication_factor >= 3 else 1

    def client_security(self) -> dict[str, str]:
        """The librdkafka-style security keys to add to every client config."""
        pairs = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        return {k: v for k, v in pairs.items() if v}


@dataclass(frozen=True, slots=True)
class Cluster:
    """Where the mesh runs, resolved once: its settings, the brokers' address (the local
    broker's, when ``MESH_BOOTSTRAP_SERVERS`` is unset: see
    :func:`mesh.adapters.kafka.source.resolve`) and the full name of each mesh topic."""

    settings: Settings
    bootstrap: str

    @classmethod
    def of(cls, settings: Settings) -> Cluster:
        """The cluster ``settings`` name (MESH_BOOTSTRAP_SERVERS must be set)."""
        if not settings.bootstrap_servers:
            raise ConfigError(
                "MESH_BOOTSTRAP_SERVERS is unset; resolve the local broker first "
                "(mesh.adapters.kafka.source.resolve)"
            )
        return cls(settings, settings.bootstrap_servers)

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    def topic(self, name: str) -> str:
        """The full name of catalogue topic ``name`` (with ``MESH_TOPIC_PREFIX``)."""
        return f"{self.settings.topic_prefix}{name}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment); raise ConfigError if bad."""
    env = os.environ if env is None else env
    unknown = sorted(k for k in env if k.startswith("MESH_") and k not in ENV_VARS)
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]}; the mesh reads only: {', '.join(sorted(ENV_VARS))}. "
            "Fix the name or unset it."
        )
    return Settings(
        bootstrap_servers=_text(env, "MESH_BOOTSTRAP_SERVERS"),
        schema_registry_url=_url(env, "MESH_SCHEMA_REGISTRY_URL"),
        schema_registry_auth=_text(env, "MESH_SCHEMA_REGISTRY_AUTH"),
        topic_prefix=_prefix(env),
        state_dir=_default_state_dir(env),
        kafka_port=_int(env, "MESH_KAFKA_PORT", DEFAULT_KAFKA_PORT, 1024, 65534),
        kafka_version=_text(env, "MESH_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION,
        kafka_heap=_heap(env),
        partitions=_int(env, "MESH_PARTITIONS", 6, 1, 1000),
        replication_factor=_int(env, "MESH_REPLICATION_FACTOR", 1, 1, 10),
        min_insync_replicas=_insync(env),
        security_protocol=_choice(
            env, "MESH_SECURITY_PROTOCOL", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        ),
        sasl_mechanism=_text(env, "MESH_SASL_MECHANISM"),
        sasl_username=_text(env, "MESH_SASL_USERNAME"),
        sasl_password=_text(env, "MESH_SASL_PASSWORD"),
        ssl_ca_location=_file(env, "MESH_SSL_CA_LOCATION"),
        ssl_certificate_location=_file(env, "MESH_SSL_CERTIFICATE_LOCATION"),
        ssl_key_location=_file(env, "MESH_SSL_KEY_LOCATION"),
        max_message_bytes=_int(env, "MESH_MAX_MESSAGE_BYTES", 1_048_576, 1024, 100_000_000),
        control_signers=_signers(env),
        control_stale_ms=_int(env, "MESH_CONTROL_STALE_MS", 5_000, 500, 600_000),
        max_clock_skew_ms=_int(env, "MESH_MAX_CLOCK_SKEW_MS", 300_000, 1_000, 86_400_000),
        profile=_profile(env),
    )


def _insync(env: Mapping[str, str]) -> int | None:
    if _text(env, "MESH_MIN_INSYNC_REPLICAS") is None:
        return None
    replicas = _int(env, "MESH_REPLICATION_FACTOR", 1, 1, 10)
    value = _int(env, "MESH_MIN_INSYNC_REPLICAS", 1, 1, 10)
    if value > replicas:
        raise ConfigError(
            f"MESH_MIN_INSYNC_REPLICAS={value} is more than MESH_REPLICATION_FACTOR={replicas}: "
            "no write could ever be acknowledged; set it to 1..the replication factor"
        )
    return value


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set it to {low}..{high}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range; set it to {low}..{high}")
    return value


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = _text(env, name)
    if raw is not None and raw.upper() not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw.upper() if raw else None


def _file(env: Mapping[str, str], name: str) -> str | None:
    raw = _text(env, name)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConfigError(f"{name}={raw!r} is not a readable file")
    return str(path)


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = _text(env, name)
    if raw is not None and not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r} must start with http:// or https://")
    return raw.rstrip("/") if raw else None


def _signers(env: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    raw = _text(env, "MESH_CONTROL_SIGNERS") or ""
    signers: dict[str, bytes] = {}
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        signer, _, key = entry.partition("=")
        try:
            public = bytes.fromhex(key.strip())
        except ValueError:
            public = b""
        if not signer.strip() or len(public) != 32:
            raise ConfigError(
                f"MESH_CONTROL_SIGNERS entry {entry!r} is not ID=HEX with a 32-byte Ed25519 "
                "public key in 64 hex digits (e.g. operator:alice=3b6a27bc...)"
            )
        signers[signer.strip()] = public
    return tuple(signers.items())


def _prefix(env: Mapping[str, str]) -> str:
    raw = _text(env, "MESH_TOPIC_PREFIX") or ""
    if raw and not all(c.isalnum() or c in "._-" for c in raw):
        raise ConfigError(
            f"MESH_TOPIC_PREFIX={raw!r} may hold only letters, digits, '.', '_' and '-'"
        )
    return raw


def _profile(env: Mapping[str, str]) -> str:
    raw = (_text(env, "MESH_PROFILE") or "production").lower()
    if raw not in ("production", "development"):
        raise ConfigError(f"MESH_PROFILE={raw!r} is not production or development")
    return raw


def _heap(env: Mapping[str, str]) -> str:
    raw = _text(env, "MESH_KAFKA_HEAP") or "1g"
    if not (raw[:-1].isdigit() and raw[-1].lower() in "mg"):
        raise ConfigError(f"MESH_KAFKA_HEAP={raw!r} must look like 512m or 2g")
    return raw


def _default_state_dir(env: Mapping[str, str]) -> Path:
    explicit = _text(env, "MESH_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = _text(env, "XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "agent-mesh"
