"""Issue 20, strict at every edge: the mesh's clients connect over TLS when configured. A
broker with a TLS listener (`mesh kafka up --tls`, certificates from its own CA) carries the
CLI, a processor and two sidecars (aiokafka) end to end; a client that does not trust the CA
is refused by the handshake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.keyfiles import control_signers
from mesh.adapters.localkafka import LocalKafka
from mesh.errors import KafkaUnavailableError
from mesh.settings import Cluster, Settings, load_settings
from processors.runtime.engine import Engine
from sidecar.core import Sidecar
from sidecar.spec import AgentSpec
from tests.conftest import free_port_pair
from tests.integration.fleet import codec_for, running
from tests.integration.test_cli import run
from tests.integration.test_sidecar import _until, registry_processor


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    settings = load_settings()
    broker = LocalKafka(
        tmp_path_factory.mktemp("kafka-tls"),
        free_port_pair(3),
        version=settings.kafka_version,
        heap="512m",
        tls=True,
    )
    broker.up()
    yield broker
    broker.down()


def tls_settings(broker: LocalKafka, state: Path) -> Settings:
    settings = load_settings().with_overrides(
        bootstrap_servers=broker.tls_bootstrap,
        security_protocol="SSL",
        ssl_ca_location=str(broker.ca_file),
        state_dir=state,
        partitions=2,
        profile="development",  # the agents' own (empty) policies stand in
    )
    control_signers(settings)
    return settings


async def test_the_cli_a_processor_and_sidecars_work_over_tls(
    tls_broker: LocalKafka, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, tmp_path / "state")
    ensured = run(["topics", "ensure"], settings)
    assert ensured.returncode == 0, ensured.stdout + ensured.stderr
    codec, registry = codec_for(settings)
    cluster = Cluster.of(settings)
    assert cluster.bootstrap == tls_broker.tls_bootstrap
    with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
        alice = Sidecar(cluster, codec.serde, AgentSpec("alice"), heartbeat_s=1.0)
        bob = Sidecar(cluster, codec.serde, AgentSpec("bob"), heartbeat_s=1.0)
        async with alice, bob:
            await _until(lambda: "bob" in alice.agents(), "bob registered, read over TLS")
            sent = await alice.send("bob", text="over TLS")
            got = await bob.receive(timeout_s=15)
            assert got is not None and got.message_id == sent and got.text() == "over TLS"
    listed = run(["agents", "ls", "--json"], settings)
    assert listed.returncode == 0 and '"alice"' in listed.stdout
    registry.close()


async def test_a_client_that_does_not_trust_the_brokers_ca_is_refused(
    tls_broker: LocalKafka, tmp_path: Path
) -> None:
    settings = tls_settings(tls_broker, tmp_path / "state")
    assert run(["topics", "ensure"], settings).returncode == 0
    untrusting = settings.with_overrides(ssl_ca_location=None)
    refused = run(["topics", "ensure"], untrusting)
    assert refused.returncode == 1 and "kafka_unavailable" in refused.stdout + refused.stderr
    sidecar = Sidecar(
        Cluster.of(untrusting), codec_for(settings)[0].serde, AgentSpec("mallory"), heartbeat_s=1
    )
    with pytest.raises(KafkaUnavailableError):
        await sidecar.start()
    TopicAdmin(Cluster.of(settings)).ensure()  # the trusting client still works


async def test_sasl_over_tls_carries_the_cli_a_processor_and_sidecars(tmp_path: Path) -> None:
    """Issue 15: `mesh kafka up --secure --tls` is the production shape, SCRAM over TLS
    (SASL_SSL) on port+2: the CLI, a processor (librdkafka) and two sidecars (aiokafka)."""
    broker = LocalKafka(
        tmp_path / "kafka",
        free_port_pair(3),
        version=load_settings().kafka_version,
        heap="512m",
        tls=True,
        secure=True,
    )
    broker.up()
    try:
        user, password = broker.admin_credentials()
        settings = tls_settings(broker, tmp_path / "state").with_overrides(
            security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user, sasl_password=password,
        )  # fmt: skip
        secret = {"MESH_SASL_MECHANISM": "SCRAM-SHA-512", "MESH_SASL_USERNAME": user,
                  "MESH_SASL_PASSWORD": password}  # fmt: skip
        ensured = run(["topics", "ensure"], settings, **secret)
        assert ensured.returncode == 0, ensured.stdout + ensured.stderr
        wrong = run(["topics", "ls"], settings, **{**secret, "MESH_SASL_PASSWORD": "guess"})
        assert wrong.returncode == 1, wrong.stdout  # the CA trusted, the password wrong
        assert "kafka_unavailable" in wrong.stderr and "uthentication" in wrong.stderr
        codec, registry = codec_for(settings)
        cluster = Cluster.of(settings)
        with running([Engine.keyed(registry_processor(settings), cluster, codec)]):
            alice = Sidecar(cluster, codec.serde, AgentSpec("alice"), heartbeat_s=1.0)
            bob = Sidecar(cluster, codec.serde, AgentSpec("bob"), heartbeat_s=1.0)
            async with alice, bob:
                await _until(lambda: "bob" in alice.agents(), "bob registered, over SASL_SSL")
                sent = await alice.send("bob", text="over SASL_SSL")
                got = await bob.receive(timeout_s=15)
                assert got is not None and got.message_id == sent
        registry.close()
    finally:
        broker.down()
