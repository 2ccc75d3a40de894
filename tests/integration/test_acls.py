"""Issue 15, a real cluster's own security: on `mesh kafka up --secure` (SASL/SCRAM, Kafka's
authorizer on) with the ACLs of `mesh acl apply`, the broker itself refuses an agent principal
that writes the control topic, reads another agent's inbox or deletes the audit topic, while
it may do what a sidecar does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mesh.adapters.keyfiles import control_signers
from mesh.adapters.localkafka import LocalKafka
from mesh.domain.topics import AUDIT, CONTROL, TELEMETRY, inbox_topic
from mesh.settings import Settings, load_settings
from tests.conftest import free_port_pair
from tests.integration.test_cli import run


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(
        tmp_path_factory.mktemp("kafka-secure"),
        free_port_pair(),
        version=load_settings().kafka_version,
        heap="512m",
        secure=True,
    )
    broker.up()
    yield broker
    broker.down()


def as_user(broker: LocalKafka, user: str, password: str) -> dict[str, str]:
    return {
        "bootstrap.servers": broker.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
    }


def mesh_env(broker: LocalKafka, state: Path) -> tuple[Settings, dict[str, str]]:
    user, password = broker.admin_credentials()
    settings = load_settings().with_overrides(
        bootstrap_servers=broker.bootstrap, state_dir=state, partitions=2, topic_prefix="sec."
    )
    control_signers(settings)
    env = {"MESH_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "MESH_SASL_MECHANISM": "SCRAM-SHA-512",
           "MESH_SASL_USERNAME": user, "MESH_SASL_PASSWORD": password}  # fmt: skip
    return settings, env


def produced(config: dict[str, str], topic: str) -> str | None:
    """Produce one record as that principal; the error's name, or None."""
    errors: list[str | None] = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 10000})
    producer.produce(topic, b"x", b"k", on_delivery=lambda err, _msg: errors.append(
        None if err is None else err.name()))  # fmt: skip
    producer.flush(15)
    return errors[0] if errors else "no delivery report"


def test_the_broker_refuses_an_agent_what_its_acls_do_not_allow(
    secure_broker: LocalKafka, tmp_path: Path
) -> None:
    settings, admin_env = mesh_env(secure_broker, tmp_path / "state")
    ensured = run(["topics", "ensure"], settings, **admin_env)
    assert ensured.returncode == 0, ensured.stdout + ensured.stderr
    for name in ("agent-a", "agent-b"):
        made = run(["acl", "user", name, "--password", f"{name}-pw"], settings, **admin_env)
        assert made.returncode == 0, made.stdout + made.stderr
    applied = run(["acl", "apply", "--agent", "agent-a", "--agent", "agent-b",
                   "--no-registry-agents"], settings, **admin_env)  # fmt: skip
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "ACLs written" in applied.stdout and "2 agent(s)" in applied.stdout

    a = as_user(secure_broker, "agent-a", "agent-a-pw")
    prefix = settings.topic_prefix
    owner = AdminClient(as_user(secure_broker, *secure_broker.admin_credentials()))
    inbox_b = f"{prefix}{inbox_topic('agent-b').name}"
    owner.create_topics([NewTopic(inbox_b, 2, 1)])[inbox_b].result(15)  # agent-b's sidecar's
    # what a sidecar does: send to another agent, report on telemetry
    assert produced(a, f"{prefix}{inbox_topic('agent-b').name}") is None
    assert produced(a, f"{prefix}{TELEMETRY}") is None
    # what no agent may do
    assert produced(a, f"{prefix}{CONTROL}") == "TOPIC_AUTHORIZATION_FAILED"
    reader = Consumer({**a, "group.id": f"{prefix}agent.agent-a", "enable.auto.commit": False,
                       "auto.offset.reset": "earliest"})  # fmt: skip
    reader.assign([TopicPartition(inbox_b, 0, OFFSET_BEGINNING)])
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while "TOPIC_AUTHORIZATION_FAILED" not in seen and time.monotonic() < deadline:
        message = reader.poll(0.5)
        if message is not None and message.error() is not None:
            seen.append(message.error().name())  # transient coordinator errors come first
        assert message is None or message.error() is not None, "read another agent's inbox"
    reader.close()
    assert "TOPIC_AUTHORIZATION_FAILED" in seen, seen  # another agent's inbox
    admin = AdminClient(a)
    with pytest.raises(KafkaException, match=r"TOPIC_AUTHORIZATION_FAILED|uthoriz"):
        admin.delete_topics([f"{prefix}{AUDIT}"])[f"{prefix}{AUDIT}"].result(15)
    assert f"{prefix}{AUDIT}" in owner.list_topics(timeout=10).topics  # still there
