"""The sidecar's local HTTP API, for agents in any language.

Bound to 127.0.0.1 and guarded by a per-sidecar bearer token (written owner-only to
``<MESH_STATE_DIR>/sidecars/<agent>.json`` with the URL). Every route maps onto one method of
:class:`sidecar.core.Sidecar`, so an HTTP agent gets exactly the checks a Python agent gets.
Errors are JSON ``{"error": CODE, "rule": RULE, "message": TEXT}``: 403 for a policy
violation, 409 while halted, 422 for a body that does not fit its schema, 400 for bad JSON,
a field the route does not know (bodies are strict: a misspelt ``permit_id`` must not pass
silently), or a send naming no recipient (or two), 404 for a recipient the mesh does not know.

A tool runs only under a permit: ``POST /v1/tools/permits`` before the call, then
``POST /v1/telemetry/tool-calls`` quoting its ``permit_id`` (:mod:`sidecar.permits`). Work that
serves a delivered message names it (``cause``, or ``reply_to`` on a send), so it counts
towards that message's chain.
The OpenAPI description is served at ``/openapi.json`` (and kept in ``sidecar/openapi.json``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mesh.adapters.metrics import CONTENT_TYPE, exposition
from mesh.errors import (
    ControlUnavailableError,
    HaltedError,
    MeshError,
    PolicyViolationError,
    RecipientError,
    SerdeError,
    ThrottledError,
)
from sidecar.core import Sidecar
from sidecar.exposition import sidecar_families

__all__ = ["SidecarServer", "build_app", "new_token"]

Handler = Callable[[Request], Awaitable[Response]]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def openapi() -> dict[str, Any]:
    return dict(json.loads(resources.files("sidecar").joinpath("openapi.json").read_text()))


def build_app(sidecar: Sidecar, token: str) -> Starlette:
    def guarded(handler: Handler) -> Handler:
        async def call(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {token}":
                return _error(401, "unauthorized", "missing or wrong bearer token")
            try:
                return await handler(request)
            except HaltedError as exc:
                return _error(409, exc.code, str(exc), "halted")
            except ControlUnavailableError as exc:  # fail closed: retry once healthy
                return _error(503, exc.code, str(exc), "control_unavailable")
            except ThrottledError as exc:  # slow down: retry after the throttle lapses
                response = _error(429, exc.code, str(exc), exc.rule)
                response.headers["retry-after"] = str(max(1, round(exc.retry_after_s)))
                return response
            except PolicyViolationError as exc:
                return _error(403, exc.code, str(exc), exc.rule)
            except RecipientError as exc:  # malformed (400) or misaddressed (404)
                status = 400 if exc.rule == "bad_recipient" else 404
                return _error(status, exc.rule, str(exc), exc.rule)
            except SerdeError as exc:
                return _error(422, exc.code, str(exc))
            except (_BadRequest, ValueError, TypeError) as exc:
                return _error(400, "bad_request", str(exc))
            except MeshError as exc:
                return _error(500, exc.code, str(exc))

        return call

    async def metrics(request: Request) -> Response:
        return Response(exposition(lambda: sidecar_families(sidecar)), media_type=CONTENT_TYPE)

    async def health(request: Request) -> Response:
        """200 while the agent may act or is halted (known state); 503 while the sidecar
        cannot follow the control topic and so refuses everything (fail closed)."""
        c = sidecar.counters
        unavailable = sidecar.control.unavailable(time.monotonic())
        status = "UNAVAILABLE" if unavailable else "HALTED" if sidecar.halt else "LIVE"
        return JSONResponse(
            {
                "agent_id": sidecar.agent_id,
                "status": status,
                "healthy": unavailable is None,
                "control": unavailable or "following",
                "restarts": sidecar.supervisor.restarts,
                "halt": sidecar.halt,
                "policy": _policy(sidecar),
                "policy_source": sidecar.policy_source(),
                "permits_open": len(sidecar.reports.permits),
                "sent": c.sent,
                "received": c.received,
                "refused": c.refused,
                "dead_lettered": c.dead_lettered,
                "redelivered": c.redelivered,
                "spend_usd": c.spend_usd,
            },
            status_code=503 if unavailable else 200,
        )

    async def send(request: Request) -> Response:
        b = await _json(request, _SEND)
        message_id = await sidecar.send(
            b.get("to"),
            b.get("body"),
            capability=b.get("capability"),
            task_id=b.get("task_id"),
            reply_to=b.get("reply_to"),
            subject=b.get("subject") or "mesh.a2a.Message",
            text=b.get("text"),
            data=b.get("data"),
        )
        return JSONResponse({"message_id": message_id}, status_code=202)

    async def next_message(request: Request) -> Response:
        timeout = float(request.query_params.get("timeout_s", "10"))
        auto = request.query_params.get("auto_ack", "false").lower() == "true"
        delivery = await sidecar.receive(timeout_s=min(timeout, 60.0), auto_ack=auto)
        if delivery is None:
            return Response(status_code=204)
        return JSONResponse(delivery.to_json())

    async def ack(request: Request) -> Response:
        if not sidecar.ack(request.path_params["message_id"]):
            return _not_outstanding(request.path_params["message_id"])
        return Response(status_code=204)

    async def nack(request: Request) -> Response:
        if not sidecar.nack(request.path_params["message_id"]):
            return _not_outstanding(request.path_params["message_id"])
        return Response(status_code=204)

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            halted = sidecar.halt
            yield b": connected\n\n"
            while not await request.is_disconnected():
                if sidecar.halt != halted:
                    halted = sidecar.halt
                    yield _sse("halt" if halted else "resume", halted or {})
                delivery = await sidecar.receive(timeout_s=1.0, auto_ack=False)
                if delivery is not None:
                    yield _sse("message", delivery.to_json())

        return StreamingResponse(events(), media_type="text/event-stream")

    async def permit(request: Request) -> Response:
        b = await _json(request, _PERMIT)
        granted = await sidecar.permit_tool(
            _required(b, "tool"),
            b.get("arguments"),
            cost_usd=float(b.get("cost_usd", 0.0)),
            cause=b.get("cause"),
            wait_approval_s=min(float(b.get("wait_approval_s", 0.0)), 60.0),
        )
        return JSONResponse(granted.to_json(), status_code=201)

    async def tool_call(request: Request) -> Response:
        b = await _json(request, _TOOL_CALL)
        cost = b.get("cost_usd")
        await sidecar.report_tool_call(
            _required(b, "tool"),
            b.get("arguments"),
            permit=b.get("permit_id"),
            cost_usd=None if cost is None else float(cost),
            latency_ms=float(b.get("latency_ms", 0.0)),
            ok=bool(b.get("ok", True)),
            detail=b.get("detail"),
        )
        return JSONResponse({"recorded": True}, status_code=202)

    async def model_call(request: Request) -> Response:
        b = await _json(request, _MODEL_CALL)
        await sidecar.report_model_call(
            _required(b, "model"),
            input_tokens=int(b.get("input_tokens", 0)),
            output_tokens=int(b.get("output_tokens", 0)),
            cost_usd=float(b.get("cost_usd", 0.0)),
            latency_ms=float(b.get("latency_ms", 0.0)),
            cause=b.get("cause"),
        )
        return JSONResponse({"recorded": True}, status_code=202)

    async def error(request: Request) -> Response:
        b = await _json(request, _ERROR)
        await sidecar.report_error(
            _required(b, "name"), str(b.get("detail", "")), cause=b.get("cause")
        )
        return JSONResponse({"recorded": True}, status_code=202)

    async def task_event(request: Request) -> Response:
        b = await _json(request, _TASK_EVENT)
        await sidecar.task_event(
            request.path_params["task_id"],
            _required(b, "kind"),
            target=b.get("target"),
            capability=b.get("capability"),
            summary=b.get("summary"),
            artifact_uris=tuple(b.get("artifact_uris", ())),
            value_usd=b.get("value_usd"),
            workflow=b.get("workflow"),
        )
        return JSONResponse({"recorded": True}, status_code=202)

    async def write_context(request: Request) -> Response:
        b = await _json(request, _CONTEXT)
        p = request.path_params
        await sidecar.write_context(
            p["task_id"], p["key"], b.get("value"), int(b.get("expected_version", 0))
        )
        return JSONResponse({"recorded": True}, status_code=202)

    async def read_context(request: Request) -> Response:
        state = await sidecar.context(request.path_params["task_id"])
        if state is None:
            return _error(404, "unknown_task", "the mesh has no events for this task")
        return Response(orjson.dumps(state, default=_bytes_hex), media_type="application/json")

    async def spec(request: Request) -> Response:
        return JSONResponse(openapi())

    routes = [
        Route("/v1/health", guarded(health), methods=["GET"]),
        Route("/v1/messages", guarded(send), methods=["POST"]),
        Route("/v1/messages/next", guarded(next_message), methods=["GET"]),
        Route("/v1/messages/stream", guarded(stream), methods=["GET"]),
        Route("/v1/messages/{message_id}/ack", guarded(ack), methods=["POST"]),
        Route("/v1/messages/{message_id}/nack", guarded(nack), methods=["POST"]),
        Route("/v1/tools/permits", guarded(permit), methods=["POST"]),
        Route("/v1/telemetry/tool-calls", guarded(tool_call), methods=["POST"]),
        Route("/v1/telemetry/model-calls", guarded(model_call), methods=["POST"]),
        Route("/v1/telemetry/errors", guarded(error), methods=["POST"]),
        Route("/v1/tasks/{task_id}/events", guarded(task_event), methods=["POST"]),
        Route("/v1/tasks/{task_id}/context", guarded(read_context), methods=["GET"]),
        Route("/v1/tasks/{task_id}/context/{key}", guarded(write_context), methods=["PUT"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/openapi.json", spec, methods=["GET"]),
    ]

    async def no_route(request: Request, exc: Exception) -> Response:
        """Every refusal is the documented error body, a wrong path or method included."""
        status = getattr(exc, "status_code", 404)
        code = "method_not_allowed" if status == 405 else "not_found"
        return _error(status, code, f"no route {request.method} {request.url.path}")

    return Starlette(routes=routes, exception_handlers={404: no_route, 405: no_route})


class SidecarServer:
    """The HTTP API of one sidecar, served on 127.0.0.1 in the sidecar's event loop."""

    def __init__(self, sidecar: Sidecar, token: str, port: int = 0) -> None:
        config = uvicorn.Config(
            build_app(sidecar, token),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Serve; returns the base URL once the socket is bound."""
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class _BadRequest(MeshError):
    code = "bad_request"


_SEND = frozenset({"to", "capability", "body", "task_id", "reply_to", "subject", "text", "data"})
_PERMIT = frozenset({"tool", "arguments", "cost_usd", "cause", "wait_approval_s"})
_TOOL_CALL = frozenset({"tool", "arguments", "permit_id", "cost_usd", "latency_ms", "ok", "detail"})
_MODEL_CALL = frozenset(
    {"model", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "cause"}
)
_ERROR = frozenset({"name", "detail", "cause"})
_TASK_EVENT = frozenset(
    {"kind", "target", "capability", "summary", "artifact_uris", "value_usd", "workflow"}
)
_CONTEXT = frozenset({"value", "expected_version"})


async def _json(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    """The JSON object body, holding only ``fields`` (an unknown one is a 400, naming it)."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _BadRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise _BadRequest(
            f"unknown field {unknown[0]!r} in the request body; this route takes "
            f"{', '.join(sorted(fields))}"
        )
    return body


def _required(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise _BadRequest(f"missing field {name!r}")
    return body[name]


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: ".encode() + orjson.dumps(data, default=_bytes_hex) + b"\n\n"


def _bytes_hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError


def _policy(sidecar: Sidecar) -> dict[str, Any] | None:
    """The operator's policy in force (target, version, hash), None while there is none."""
    in_force = sidecar.operator_policy
    if in_force is None:
        return None
    return {"target": in_force.target, "version": in_force.version, "hash": in_force.hash}


def _not_outstanding(message_id: str) -> Response:
    return _error(
        404,
        "not_outstanding",
        f"message {message_id!r} is not outstanding: acknowledged already, or never delivered "
        "to this agent",
    )


def _error(status: int, code: str, message: str, rule: str | None = None) -> Response:
    return JSONResponse({"error": code, "rule": rule, "message": message}, status_code=status)
