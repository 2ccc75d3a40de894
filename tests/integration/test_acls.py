"""Issue 15, a real cluster's own security: on `mesh kafka up --secure` (SASL/SCRAM, Kafka's
authorizer on) with the ACLs of `mesh acl apply`, the broker itself refuses an agent principal
that writes the control topic, reads another agent's inbox or deletes the audit topic, while
it may do what a sidecar does."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mesh.adapters.keyfiles import control_signers
from mesh.adapters.localkafka import LocalKafka
from mesh.domain.topics import AUDIT, CONTROL, TELEMETRY, inbox_topic
from mesh.settings import Cluster, Settings, load_settings
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec
from tests.conftest import free_port_pair
from tests.integration.fleet import codec_for
from tests.integration.test_cli import run, spawn
from tests.integration.test_sidecar import _until


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


async def test_sidecars_and_the_processors_work_under_their_own_principals(
    secure_broker: LocalKafka, tmp_path: Path
) -> None:
    """The ACLs are not only refusals: all four processors (`mesh processors run`) as the
    processors' principal and two sidecars as their agents' principals register, follow
    control and exchange a message, and the audit, reading every inbox, stays complete."""
    settings, admin_env = mesh_env(secure_broker, tmp_path / "state")
    settings = settings.with_overrides(topic_prefix="sec2.", profile="development")
    for name in ("mesh-processors", "alice", "bob"):
        made = run(["acl", "user", name, "--password", f"{name}-pw"], settings, **admin_env)
        assert made.returncode == 0, made.stdout + made.stderr
    for step in (
        ["topics", "ensure"],
        ["schemas", "register"],
        ["acl", "apply", "--agent", "alice", "--agent", "bob", "--no-registry-agents"],
    ):
        done = run(step, settings, **admin_env)
        assert done.returncode == 0, (step, done.stdout, done.stderr)

    def principal(name: str) -> Settings:
        return settings.with_overrides(
            security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
            sasl_username=name, sasl_password=f"{name}-pw",
        )  # fmt: skip

    as_processors = {**admin_env, "MESH_SASL_USERNAME": "mesh-processors",
                     "MESH_SASL_PASSWORD": "mesh-processors-pw"}  # fmt: skip
    processors = spawn(
        ["processors", "run", "registry", "state", "audit", "killswitch"], settings, **as_processors
    )
    try:
        await asyncio.to_thread(processors.wait_for_line, "ready:", 120)
        alice_codec, alice_registry = codec_for(principal("alice"))
        bob_codec, bob_registry = codec_for(principal("bob"))
        alice = Sidecar(Cluster.of(principal("alice")), alice_codec.serde, AgentSpec("alice"),
                        heartbeat_s=1.0)  # fmt: skip
        bob = Sidecar(Cluster.of(principal("bob")), bob_codec.serde, AgentSpec("bob"),
                      heartbeat_s=1.0)  # fmt: skip
        async with alice, bob:
            await _until(lambda: "bob" in alice.agents(), "bob registered", 30)
            sent = await alice.send("bob", text="under my own name")
            got = await bob.receive(timeout_s=20)
            assert got is not None and got.message_id == sent
        alice_registry.close()
        bob_registry.close()
        deadline = time.monotonic() + 60
        while True:  # the audit, as the processors' principal, recorded every record
            verified = await asyncio.to_thread(
                run, ["audit", "verify", "--complete"], settings, **admin_env
            )
            if verified.returncode == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "complete: every record of" in verified.stdout
        assert processors.process.poll() is None, processors.output()
        processors.process.send_signal(signal.SIGTERM)
        assert processors.process.wait(60) == 0, processors.output()
    finally:
        processors.close()
    assert "TOPIC_AUTHORIZATION_FAILED" not in processors.output()
    assert "GROUP_AUTHORIZATION_FAILED" not in processors.output()
