"""Issue 15: the sidecar's HTTP API fuzzed from its OpenAPI description (property-based, with
hypothesis): every route that takes a body or a path parameter gets bodies generated from its
request schema, bodies that break it (wrong types, unknown fields, other JSON, bytes that are
not JSON) and odd path values. Whatever comes in: no 5xx, no hang, and every refusal is the
documented error body."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.settings import Cluster, Settings
from processors.runtime.engine import Engine
from sidecar.http import SidecarServer, new_token, openapi
from tests.integration.fleet import codec_for, running
from tests.integration.test_sidecar import Mesh, registry_processor

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that fit ``schema`` (the subset the description uses), often with extra keys."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fields = {k: from_schema(v) for k, v in props.items()}
        return st.fixed_dictionaries(
            {k: s for k, s in fields.items() if k in required},
            optional={k: s for k, s in fields.items() if k not in required},
        )
    if kind == "string":
        return st.text(max_size=40)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
    if kind == "integer":
        return st.integers(min_value=-(10**6), max_value=10**6)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=3)
    return JSON_VALUES


def routes() -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, request schema) of every route that takes input; the waiting ones
    (next, stream) are left out: they wait by design."""
    found = []
    for path, ops in openapi()["paths"].items():
        if path.endswith(("/next", "/stream")) or path == "/openapi.json":
            continue
        for method, op in ops.items():
            body = op.get("requestBody")
            schema = body["content"]["application/json"]["schema"] if body else None
            if schema is not None or "{" in path:
                found.append((method.upper(), path, schema))
    return found


def bodies(schema: dict[str, Any] | None) -> st.SearchStrategy[bytes]:
    valid = from_schema(schema or {"type": "object"}).map(lambda v: json.dumps(v).encode())
    extra = st.dictionaries(st.text(min_size=1, max_size=8), JSON_VALUES, max_size=3)
    widened = st.tuples(from_schema(schema or {"type": "object"}), extra).map(
        lambda pair: json.dumps(
            {**pair[1], **pair[0]} if isinstance(pair[0], dict) else pair[0]
        ).encode()
    )
    other = JSON_VALUES.map(lambda v: json.dumps(v).encode())
    junk = st.binary(max_size=64)
    return st.one_of(valid, widened, other, junk)


SEGMENT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


def fuzz(url: str, token: str) -> dict[int, int]:
    """Every route, with generated input; the count of each status seen. Runs in its own
    process (``python -m tests.integration.test_http_fuzz URL TOKEN``): hypothesis owns the
    global random module while it draws, and the sidecar's event loop uses it too."""
    seen: dict[int, int] = {}
    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=30.0) as http:
        for method, path, schema in routes():
            _route(http, auth, method, path, schema, seen)
    return seen


def _route(
    http: httpx.Client,
    auth: dict[str, str],
    method: str,
    path: str,
    schema: dict[str, Any] | None,
    seen: dict[int, int],
) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies(schema), a=SEGMENT, b=SEGMENT)
    def one(body: bytes, a: str, b: str) -> None:
        a, b = quote(a, safe=""), quote(b, safe="")  # any text, percent-encoded
        target = path.replace("{message_id}", a).replace("{task_id}", a).replace("{key}", b)
        response = http.request(method, target, content=body, headers=auth)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (method, target, body, response.text)
        if response.status_code >= 400:
            error = response.json()
            assert set(error) == {"error", "rule", "message"}, error

    one()


async def test_no_input_makes_the_sidecar_api_fail_or_hang(
    settings: Settings, topics: object
) -> None:
    codec, registry = codec_for(settings)
    with running([Engine.keyed(registry_processor(settings), Cluster.of(settings), codec)]):
        fuzzed = Mesh(settings, codec).sidecar("fuzzed")
        token = new_token()
        server = SidecarServer(fuzzed, token)
        await fuzzed.start()
        url = await server.start()
        try:
            client = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.integration.test_http_fuzz", url, token,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await asyncio.wait_for(client.communicate(), 600)
        finally:
            await server.stop()
            await fuzzed.stop()
    registry.close()
    assert client.returncode == 0, output.decode()[-3000:]
    seen = {int(k): v for k, v in json.loads(output.decode().strip().splitlines()[-1]).items()}
    assert sum(seen.values()) >= 40 * len(routes())
    assert any(400 <= s < 500 for s in seen) and any(s < 300 for s in seen), seen


if __name__ == "__main__":
    print(json.dumps(fuzz(sys.argv[1], sys.argv[2])))
