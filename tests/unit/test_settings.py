from pathlib import Path

import pytest

from mesh.adapters.keyfiles import trust_anchors
from mesh.errors import ConfigError
from mesh.settings import Settings, load_settings


def test_defaults_without_any_variable() -> None:
    settings = load_settings({"HOME": "/home/x"})
    assert settings.bootstrap_servers is None
    assert settings.schema_registry_url is None
    assert settings.kafka_port == 19092
    assert settings.partitions == 6
    assert settings.state_dir.name == "agent-mesh"


def test_reads_every_documented_variable() -> None:
    settings = load_settings(
        {
            "MESH_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "MESH_SCHEMA_REGISTRY_URL": "http://sr:8081/",
            "MESH_TOPIC_PREFIX": "team-a.",
            "MESH_STATE_DIR": "/tmp/mesh-x",
            "MESH_PARTITIONS": "12",
            "MESH_SECURITY_PROTOCOL": "sasl_ssl",
            "MESH_SASL_USERNAME": "u",
            "MESH_SASL_PASSWORD": "p",
        }
    )
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.schema_registry_url == "http://sr:8081"
    assert settings.topic_prefix == "team-a."
    assert settings.state_dir == Path("/tmp/mesh-x")
    assert settings.partitions == 12
    assert settings.client_security() == {
        "security.protocol": "SASL_SSL",
        "sasl.username": "u",
        "sasl.password": "p",
    }


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MESH_PARTITIONS": "many"}, "MESH_PARTITIONS='many' is not a whole number"),
        ({"MESH_PARTITIONS": "0"}, "MESH_PARTITIONS=0 is out of range"),
        ({"MESH_KAFKA_PORT": "80"}, "MESH_KAFKA_PORT=80 is out of range"),
        ({"MESH_SCHEMA_REGISTRY_URL": "sr:8081"}, "must start with http://"),
        ({"MESH_SECURITY_PROTOCOL": "TLS"}, "is not one of PLAINTEXT"),
        ({"MESH_TOPIC_PREFIX": "a b"}, "may hold only letters"),
        ({"MESH_KAFKA_HEAP": "lots"}, "must look like 512m or 2g"),
        ({"MESH_BOOTSTRAP_SERVER": "x:1"}, "unknown setting MESH_BOOTSTRAP_SERVER"),
        ({"MESH_CONTROL_SIGNERS": "alice"}, "entry 'alice' is not ID=HEX"),
        ({"MESH_CONTROL_SIGNERS": "alice=zz"}, "32-byte Ed25519 public key"),
        ({"MESH_CONTROL_SIGNERS": f"alice={'ab' * 31}"}, "in 64 hex digits"),
        ({"MESH_CONTROL_SIGNERS": f"={'ab' * 32}"}, "is not ID=HEX"),
    ],
)
def test_broken_config_names_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        load_settings(env)
    assert fragment in str(caught.value)


def test_control_signers_are_read_as_id_and_public_key() -> None:
    raw = f" operator:alice={'ab' * 32} , bot={'CD' * 32},"
    settings = load_settings({"MESH_CONTROL_SIGNERS": raw})
    assert dict(settings.control_signers) == {
        "operator:alice": bytes.fromhex("ab" * 32),
        "bot": bytes.fromhex("cd" * 32),
    }
    assert hash(settings)  # still a value


def test_settings_are_immutable() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.partitions = 3  # type: ignore[misc]
    assert settings.with_overrides(partitions=3).partitions == 3


def test_a_verifier_without_trust_anchors_refuses_and_mints_nothing(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match="no trust anchor for the mesh's key"):
        trust_anchors(settings)
    assert not (tmp_path / "state" / "keys").exists()  # nothing minted to fill the gap
    mesh_only = settings.with_overrides(control_signers=(("mesh", b"\x01" * 32),))
    with pytest.raises(ConfigError, match="an operator's key"):
        trust_anchors(mesh_only)
    configured = mesh_only.with_overrides(
        control_signers=(("mesh", b"\x01" * 32), ("operator:alice", b"\x02" * 32))
    )
    assert set(trust_anchors(configured)) == {"mesh", "operator:alice"}
    development = settings.with_overrides(profile="development")
    assert "mesh" in trust_anchors(development)  # created on first use, in development only
    assert (tmp_path / "state" / "keys" / "mesh.key").exists()


def test_the_profile_is_production_unless_development_is_chosen() -> None:
    assert load_settings({}).profile == "production"
    assert load_settings({"MESH_PROFILE": "Development"}).profile == "development"
    with pytest.raises(ConfigError, match="MESH_PROFILE='staging' is not production"):
        load_settings({"MESH_PROFILE": "staging"})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 1),
        ({"MESH_REPLICATION_FACTOR": "2"}, 1),
        ({"MESH_REPLICATION_FACTOR": "3"}, 2),  # one broker may be lost, writes go on
        ({"MESH_REPLICATION_FACTOR": "5"}, 2),
        ({"MESH_REPLICATION_FACTOR": "3", "MESH_MIN_INSYNC_REPLICAS": "3"}, 3),
    ],
)
def test_min_insync_replicas_follow_the_replication_factor(
    env: dict[str, str], expected: int
) -> None:
    assert load_settings(env).insync_replicas() == expected


def test_min_insync_replicas_above_the_replication_factor_are_refused() -> None:
    with pytest.raises(ConfigError, match="MESH_MIN_INSYNC_REPLICAS=3 is more than"):
        load_settings({"MESH_REPLICATION_FACTOR": "2", "MESH_MIN_INSYNC_REPLICAS": "3"})
