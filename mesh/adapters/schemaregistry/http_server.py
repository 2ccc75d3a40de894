"""The Confluent Schema Registry REST subset, served over any SchemaRegistry.

Enough for ``confluent_kafka.schema_registry.SchemaRegistryClient`` and its Avro serializers
to work unchanged: subjects and versions, schemas by id, lookup, compatibility tests and
compatibility config. Only Avro without references is accepted; anything else gets a
Confluent-style error (``{"error_code": ..., "message": ...}``) that says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mesh.adapters.metrics import CONTENT_TYPE, Family, exposition
from mesh.adapters.schemaregistry.core import RegisteredSchema
from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.errors import ConfigError, InvalidSchemaError, MeshError, SchemaRegistryError

__all__ = ["registry_app"]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
Handler = Callable[[Request], Awaitable[Response]]


def registry_app(registry: SchemaRegistry) -> Starlette:
    """A Starlette app serving ``registry``."""
    api = _Api(registry)
    routes = [
        Route("/", api.root, methods=["GET"]),
        Route("/subjects", api.subjects, methods=["GET"]),
        Route("/subjects/{subject}", api.lookup, methods=["POST"]),
        Route("/subjects/{subject}/versions", api.versions, methods=["GET"]),
        Route("/subjects/{subject}/versions", api.register, methods=["POST"]),
        Route("/subjects/{subject}/versions/{version}", api.version, methods=["GET"]),
        Route("/subjects/{subject}/versions/{version}/schema", api.raw_schema, methods=["GET"]),
        Route("/schemas/types", api.types, methods=["GET"]),
        Route("/schemas/ids/{id:int}", api.by_id, methods=["GET"]),
        Route("/schemas/ids/{id:int}/versions", api.id_versions, methods=["GET"]),
        Route("/schemas/ids/{id:int}/subjects", api.id_subjects, methods=["GET"]),
        Route("/compatibility/subjects/{subject}/versions", api.compat_all, methods=["POST"]),
        Route("/compatibility/subjects/{subject}/versions/{version}", api.compat, methods=["POST"]),
        Route("/config", api.get_config, methods=["GET"]),
        Route("/config", api.put_config, methods=["PUT"]),
        Route("/config/{subject}", api.get_config, methods=["GET"]),
        Route("/config/{subject}", api.put_config, methods=["PUT"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]

    async def count(request: Request, call_next: Handler) -> Response:
        response = await call_next(request)
        key = (request.method, str(response.status_code))
        api.requests[key] = api.requests.get(key, 0) + 1
        return response

    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=count)])


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> Response:
    return _json({"error_code": code, "message": message}, status)


def _schema_payload(registered: RegisteredSchema) -> dict[str, Any]:
    return {
        "subject": registered.subject,
        "version": registered.version,
        "id": registered.schema_id,
        "schema": registered.schema,
    }


class _Api:
    """Request handlers; each runs the blocking registry call in a worker thread."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self.requests: dict[tuple[str, str], int] = {}  # (method, status) -> count

    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics: requests by method and status, subjects registered."""
        subjects = float(len(await run_in_threadpool(self.registry.subjects)))
        requests = Family(
            "mesh_registry_requests", "counter", "REST requests served, by method and status.",
            ("method", "status"), [(k, float(v)) for k, v in sorted(self.requests.items())],
        )  # fmt: skip
        families = [
            requests,
            Family("mesh_registry_subjects", "gauge", "Subjects registered.", (),
                   [((), subjects)]),
        ]  # fmt: skip
        return Response(exposition(lambda: families), media_type=CONTENT_TYPE)

    async def _run(self, call: Callable[[], Any]) -> Response:
        try:
            return _json(await run_in_threadpool(call))
        except SchemaRegistryError as exc:
            return _error(exc.http_status, exc.confluent_code, str(exc))
        except ConfigError as exc:
            return _error(422, 42203, str(exc))
        except MeshError as exc:
            return _error(500, 50001, str(exc))

    async def root(self, request: Request) -> Response:
        return _json({})

    async def types(self, request: Request) -> Response:
        return _json(["AVRO"])

    async def subjects(self, request: Request) -> Response:
        return await self._run(self.registry.subjects)

    async def versions(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        return await self._run(lambda: self.registry.versions(subject))

    async def register(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        schema = await _schema_of(request)
        if isinstance(schema, Response):
            return schema
        return await self._run(lambda: {"id": self.registry.register(subject, schema).schema_id})

    async def lookup(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        schema = await _schema_of(request)
        if isinstance(schema, Response):
            return schema
        return await self._run(lambda: _schema_payload(self.registry.lookup(subject, schema)))

    async def version(self, request: Request) -> Response:
        subject, version = request.path_params["subject"], request.path_params["version"]
        return await self._run(lambda: _schema_payload(self.registry.get_version(subject, version)))

    async def raw_schema(self, request: Request) -> Response:
        subject, version = request.path_params["subject"], request.path_params["version"]
        return await self._run(
            lambda: orjson.loads(self.registry.get_version(subject, version).schema)
        )

    async def by_id(self, request: Request) -> Response:
        schema_id = request.path_params["id"]
        return await self._run(lambda: {"schema": self.registry.schema_by_id(schema_id)})

    async def id_versions(self, request: Request) -> Response:
        schema_id = request.path_params["id"]
        return await self._run(
            lambda: [{"subject": r.subject, "version": r.version} for r in self._uses(schema_id)]
        )

    async def id_subjects(self, request: Request) -> Response:
        schema_id = request.path_params["id"]
        return await self._run(lambda: sorted({r.subject for r in self._uses(schema_id)}))

    async def compat(self, request: Request) -> Response:
        return await self._compat(request, request.path_params["version"])

    async def compat_all(self, request: Request) -> Response:
        return await self._compat(request, "all")

    async def get_config(self, request: Request) -> Response:
        subject = request.path_params.get("subject")
        return await self._run(lambda: {"compatibilityLevel": self.registry.get_level(subject)})

    async def put_config(self, request: Request) -> Response:
        subject = request.path_params.get("subject")
        body = await _body(request)
        if isinstance(body, Response):
            return body
        level = str(body.get("compatibility", ""))
        return await self._run(lambda: {"compatibility": self.registry.set_level(level, subject)})

    async def _compat(self, request: Request, against: str) -> Response:
        subject = request.path_params["subject"]
        schema = await _schema_of(request)
        if isinstance(schema, Response):
            return schema
        verbose = request.query_params.get("verbose", "false").lower() == "true"

        def check() -> dict[str, Any]:
            try:
                self.registry.versions(subject)
            except SchemaRegistryError:
                return {"is_compatible": True}
            problems = self.registry.compatibility_problems(subject, schema, against)
            result: dict[str, Any] = {"is_compatible": not problems}
            if verbose:
                result["messages"] = problems
            return result

        return await self._run(check)

    def _uses(self, schema_id: int) -> list[RegisteredSchema]:
        self.registry.schema_by_id(schema_id)  # raises 40403 for an unknown id
        return [
            self.registry.get_version(subject, version)
            for subject in self.registry.subjects()
            for version in self.registry.versions(subject)
            if self.registry.get_version(subject, version).schema_id == schema_id
        ]


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _error(422, 42201, f"request body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(422, 42201, "request body must be a JSON object")
    return body


async def _schema_of(request: Request) -> str | Response:
    body = await _body(request)
    if isinstance(body, Response):
        return body
    kind = body.get("schemaType", "AVRO") or "AVRO"
    if kind != "AVRO":
        return _error(422, 42201, f"schemaType {kind} is not supported; this registry serves AVRO")
    if body.get("references"):
        return _error(422, 42201, "schema references are not supported; inline named types")
    schema = body.get("schema")
    if not isinstance(schema, str):
        error = InvalidSchemaError("the request has no 'schema' string")
        return _error(error.http_status, error.confluent_code, str(error))
    return schema
