"""The embedded registry on the real broker: the contract, and ids that are never reused."""

import threading
from collections.abc import Iterator

import pytest

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.settings import Cluster, Settings
from tests.registry_contract import RegistryContract, schema


@pytest.fixture
def kafka_registry(settings: Settings, topics: TopicAdmin) -> Iterator[KafkaRegistry]:
    registry = KafkaRegistry(Cluster.of(settings))
    yield registry
    registry.close()


class TestKafkaRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, kafka_registry: KafkaRegistry) -> SchemaRegistry:
        return kafka_registry


def test_state_is_rebuilt_from_the_topic(settings: Settings, kafka_registry: KafkaRegistry) -> None:
    registered = kafka_registry.register("c.Rebuilt", schema(name="Rebuilt"))
    kafka_registry.set_level("FULL", "c.Rebuilt")
    fresh = KafkaRegistry(Cluster.of(settings))
    try:
        assert fresh.get_version("c.Rebuilt", 1) == registered
        assert fresh.get_level("c.Rebuilt") == "FULL"
    finally:
        fresh.close()


def test_two_writers_never_hand_out_one_id_twice(settings: Settings, topics: TopicAdmin) -> None:
    writers = [KafkaRegistry(Cluster.of(settings)) for _ in range(2)]
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def work(registry: KafkaRegistry, tag: str) -> None:
        try:
            for i in range(8):
                name = f"W{tag}{i}"
                results[name] = registry.register(f"c.{name}", schema(name=name)).schema_id
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(w, t)) for w, t in zip(writers, "AB", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(results) == 16
    assert len(set(results.values())) == 16, results  # every schema its own id

    reader = KafkaRegistry(Cluster.of(settings))
    try:
        for name, schema_id in results.items():
            assert reader.get_version(f"c.{name}", 1).schema_id == schema_id
    finally:
        for registry in (*writers, reader):
            registry.close()
