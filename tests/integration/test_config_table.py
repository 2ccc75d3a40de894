"""Issue 15: bad configuration and bad arguments, table-driven. Every MESH_* variable that can
be wrong, and every command: one clear line naming the variable, exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.settings import ENV_VARS
from tests.integration.test_cli import run

#: A wrong value for each variable the mesh validates (the others take any text: a host list,
#: a user name, a password, a path to be created).
BAD = {
    "MESH_SCHEMA_REGISTRY_URL": "registry.example.com",
    "MESH_TOPIC_PREFIX": "bad prefix!",
    "MESH_KAFKA_PORT": "80",
    "MESH_KAFKA_HEAP": "lots",
    "MESH_PARTITIONS": "0",
    "MESH_REPLICATION_FACTOR": "eleven",
    "MESH_MIN_INSYNC_REPLICAS": "2",  # more than the default replication factor of 1
    "MESH_SECURITY_PROTOCOL": "CARRIER_PIGEON",
    "MESH_SSL_CA_LOCATION": "/no/such/ca.pem",
    "MESH_SSL_CERTIFICATE_LOCATION": "/no/such/cert.pem",
    "MESH_SSL_KEY_LOCATION": "/no/such/key.pem",
    "MESH_MAX_MESSAGE_BYTES": "12",
    "MESH_CONTROL_SIGNERS": "operator:bob=not-hex",
    "MESH_PROFILE": "staging",
    "MESH_MAX_CLOCK_SKEW_MS": "-5",
    "MESH_CONTROL_STALE_MS": "1e9",
    "MESH_NOT_A_SETTING": "1",
}
FREE_TEXT = {
    "MESH_BOOTSTRAP_SERVERS", "MESH_SCHEMA_REGISTRY_AUTH", "MESH_STATE_DIR",
    "MESH_KAFKA_VERSION", "MESH_SASL_MECHANISM", "MESH_SASL_USERNAME", "MESH_SASL_PASSWORD",
}  # fmt: skip
COMMANDS = [
    ["up"], ["down"], ["status"], ["demo"], ["halts"], ["graph"], ["send", "a", "--text", "x"],
    ["halt", "a", "--reason", "r"], ["resume", "a", "--reason", "r"], ["tail", "mesh.dlq.v1"],
    ["kafka", "status"], ["keys", "show"], ["policy", "show"], ["approvals", "ls"],
    ["acl", "apply"], ["topics", "ls"], ["schemas", "check"], ["registry", "serve"],
    ["processors", "run", "registry"], ["audit", "verify"], ["sidecar", "run", "a"],
    ["agents", "ls"], ["state", "show", "t"],
]  # fmt: skip


def test_the_table_names_every_variable() -> None:
    assert set(BAD) - {"MESH_NOT_A_SETTING"} | FREE_TEXT == set(ENV_VARS)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_of_each_variable_is_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    result = run(["topics", "ls"], **{name: BAD[name], "MESH_STATE_DIR": str(tmp_path)})
    assert result.returncode == 2, (name, result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error (config): ") and name in line, line
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_command_refuses_broken_config_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    result = run(command, MESH_PARTITIONS="lots", MESH_STATE_DIR=str(tmp_path))
    assert result.returncode == 2, (command, result.stdout, result.stderr)
    assert result.stderr.strip() == (
        "error (config): MESH_PARTITIONS='lots' is not a whole number; set it to 1..1000"
    )
