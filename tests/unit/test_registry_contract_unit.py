"""The registry contract against the in-memory registry, directly and over the REST app."""

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from mesh.adapters.schemaregistry.http_client import HttpRegistry
from mesh.adapters.schemaregistry.http_server import registry_app
from mesh.adapters.schemaregistry.memory import InMemoryRegistry
from mesh.adapters.schemaregistry.port import SchemaRegistry
from tests.registry_contract import RegistryContract


class TestInMemory(RegistryContract):
    @pytest.fixture
    def registry(self) -> SchemaRegistry:
        return InMemoryRegistry()


class TestRestOverInMemory(RegistryContract):
    @pytest.fixture
    def registry(self) -> Iterator[SchemaRegistry]:
        with TestClient(registry_app(InMemoryRegistry())) as client:
            yield HttpRegistry("http://testserver", client=client)


def test_rest_errors_follow_confluent() -> None:
    with TestClient(registry_app(InMemoryRegistry())) as client:
        missing = client.get("/subjects/nope/versions")
        assert missing.status_code == 404
        assert missing.json()["error_code"] == 40401
        assert client.get("/schemas/ids/42").json()["error_code"] == 40403
        protobuf = client.post(
            "/subjects/x/versions", json={"schema": "x", "schemaType": "PROTOBUF"}
        )
        assert protobuf.status_code == 422
        assert "this registry serves AVRO" in protobuf.json()["message"]
        not_json = client.post("/subjects/x/versions", content=b"{{")
        assert not_json.status_code == 422
        bad_level = client.put("/config", json={"compatibility": "SOMETIMES"})
        assert bad_level.status_code == 422
        assert bad_level.json()["error_code"] == 42203
        assert client.get("/schemas/types").json() == ["AVRO"]
