"""Our REST registry with Confluent's own client and Avro serde, both ways, through Kafka."""

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client.parser import text_string_to_metric_families

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import consumer_config, producer_config
from mesh.adapters.schemaregistry.http_client import HttpRegistry
from mesh.adapters.schemaregistry.http_server import registry_app
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.contracts import latest
from mesh.domain.topics import inbox_topic
from mesh.settings import Cluster, Settings
from tests.conftest import free_port_pair
from tests.registry_contract import RegistryContract

HEARTBEAT = "mesh.registry.Heartbeat"
RECORD = {
    "agent_id": "a-1",
    "instance_id": "i-1",
    "sequence": 42,
    "load": 0.25,
    "in_flight_tasks": 3,
}


@pytest.fixture
def served(settings: Settings, topics: TopicAdmin) -> Iterator[tuple[str, KafkaRegistry]]:
    """`mesh registry serve` in a thread: the Kafka registry behind real HTTP."""
    registry = KafkaRegistry(Cluster.of(settings))
    port = free_port_pair()
    server = uvicorn.Server(uvicorn.Config(registry_app(registry), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", registry
    server.should_exit = True
    thread.join(10)
    registry.close()


class TestRestOverKafka(RegistryContract):
    @pytest.fixture
    def registry(self, served: tuple[str, KafkaRegistry]) -> Iterator[SchemaRegistry]:
        client = HttpRegistry(served[0])
        yield client
        client.close()


def _round_trip_through_kafka(settings: Settings, value: bytes) -> bytes:
    topic = f"{settings.topic_prefix}{inbox_topic('interop').name}"
    TopicAdmin(Cluster.of(settings)).ensure([inbox_topic("interop")])
    producer = Producer(producer_config(Cluster.of(settings)))
    delivered = []
    producer.produce(topic, value, b"k", on_delivery=lambda e, m: delivered.append(m))
    producer.flush(10)
    message = delivered[0]
    consumer = Consumer(consumer_config(Cluster.of(settings), "interop"))
    consumer.assign([TopicPartition(topic, message.partition(), message.offset())])
    try:
        received = consumer.poll(10)
        assert received is not None and received.error() is None
        return bytes(received.value())
    finally:
        consumer.close()


def test_confluent_serializer_bytes_decode_with_the_mesh(
    settings: Settings, served: tuple[str, KafkaRegistry]
) -> None:
    url, registry = served
    with SchemaRegistryClient({"url": url}) as client:
        serializer = AvroSerializer(client, json.dumps(latest(HEARTBEAT).schema))
        context = SerializationContext("interop", MessageField.VALUE)
        value = _round_trip_through_kafka(settings, serializer(RECORD, context))
        assert "interop-value" in client.get_subjects()

    decoded = Serde(registry).decode(value)
    assert decoded.subject == HEARTBEAT
    assert decoded.record == RECORD


def test_mesh_bytes_decode_with_confluents_deserializer(
    settings: Settings, served: tuple[str, KafkaRegistry]
) -> None:
    url, registry = served
    value = _round_trip_through_kafka(settings, Serde(registry).encode(HEARTBEAT, RECORD))
    with SchemaRegistryClient({"url": url}) as client:
        deserializer = AvroDeserializer(client)
        assert deserializer(value, SerializationContext("interop", MessageField.VALUE)) == RECORD


def test_confluent_client_sees_compatibility_and_config(served: tuple[str, KafkaRegistry]) -> None:
    url, _ = served
    with SchemaRegistryClient({"url": url}) as client:
        _compatibility_and_config(client)


def _compatibility_and_config(client: SchemaRegistryClient) -> None:
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    v1 = json.dumps(latest(HEARTBEAT).schema)
    breaking = json.loads(v1)
    breaking["fields"].append({"name": "required_now", "type": "int"})
    client.register_schema("hb", Schema(v1, "AVRO"))
    assert client.get_compatibility("hb") == "BACKWARD_TRANSITIVE"
    assert client.test_compatibility("hb", Schema(json.dumps(breaking), "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema("hb", Schema(json.dumps(breaking), "AVRO"))
    assert caught.value.http_status_code == 409
    assert client.get_latest_version("hb").version == 1


def test_the_registry_api_serves_prometheus_metrics(served: tuple[str, KafkaRegistry]) -> None:
    url, _ = served
    registered = httpx.post(f"{url}/subjects/metrics-value/versions",
                            json={"schema": '"string"'})  # fmt: skip
    assert registered.status_code == 200, registered.text
    assert httpx.get(f"{url}/subjects/nope/versions").status_code == 404
    families = {
        s.name: s
        for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for s in f.samples
        if s.name != "mesh_registry_requests_total" or s.labels["status"] == "404"
    }
    assert families["mesh_registry_subjects"].value >= 1
    assert families["mesh_registry_requests_total"].labels == {"method": "GET", "status": "404"}
