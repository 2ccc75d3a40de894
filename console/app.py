"""The console's web app (Starlette): the page, its live stream, and halt and resume.

* ``GET /``: the page (one HTML file, vanilla JavaScript, the vendored cytoscape.js and
  uPlot); ``/?token=...`` logs in (an HttpOnly, SameSite=Strict cookie) and redirects.
* ``GET /events?q=WORDS&limit=N``: server-sent events, the whole state first, then every
  change (:mod:`console.feed`); the agents only those matching ``q``, at most ``limit`` (500)
  in the first snapshot: the fleet view filters on the server.
* ``GET /api/state``: the whole state as JSON; ``GET /metrics``: Prometheus metrics.
* ``/api/audit/...`` and ``/api/tasks/{id}``: :mod:`console.records`.
* ``POST /api/halt``, ``POST /api/resume``: ``{"scope": "agent"|"dependants"|"capability"|
  "fleet", "target": ..., "reason": ...}``, operator role and ``X-CSRF-Token`` required. The
  command is the one `mesh halt` sends, signed with this host's operator key, so the audit log
  records the operator who issued it; its reason says it came from the console.

Every route needs a token (:mod:`console.auth`): 401 without one, 403 for a viewer's halt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from confluent_kafka import KafkaException, Producer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from console.auth import OPERATOR, Tokens, csrf_for
from console.feed import Feed
from console.records import Records, TaskLookup
from console.views import Filter
from mesh.adapters.commands import send_command
from mesh.adapters.kafka.config import producer_config
from mesh.adapters.metrics import CONTENT_TYPE, exposition
from mesh.domain.control import Action, Scope
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["build_app"]

COOKIE = "mesh_console"
Handler = Callable[[Request], Awaitable[Response]]
_SCOPES = {
    "agent": Scope.AGENT,
    "dependants": Scope.DEPENDANTS,
    "capability": Scope.CAPABILITY,
    "fleet": Scope.FLEET,
    "chain": Scope.CHAIN,
}
_STATIC = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "vendor/cytoscape.min.js": "text/javascript",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
}


def _static(name: str) -> bytes:
    return resources.files("console").joinpath("static", name).read_bytes()


def build_app(
    cluster: Cluster,
    feed: Feed,
    tokens: Tokens,
    keepalive_s: float = 15.0,
    task_lookup: TaskLookup | None = None,
) -> Starlette:
    def presented(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth.removeprefix("Bearer ")
        return request.cookies.get(COOKIE)

    def guarded(handler: Callable[[Request, str, str], Awaitable[Response]]) -> Handler:
        async def call(request: Request) -> Response:
            token = presented(request)
            role = tokens.role_of(token)
            if role is None or token is None:
                return _unauthorized(request)
            return await handler(request, role, token)

        return call

    async def index(request: Request) -> Response:
        login = request.query_params.get("token")
        if login is not None:
            if tokens.role_of(login) is None:
                return _unauthorized(request)
            page = RedirectResponse("/", status_code=303)
            page.set_cookie(COOKIE, login, httponly=True, samesite="strict")
            return page
        return await guarded(_page)(request)

    async def _page(request: Request, role: str, token: str) -> Response:
        html = _static("index.html").decode()
        html = html.replace("{{role}}", role).replace("{{csrf}}", csrf_for(token))
        return HTMLResponse(html, headers=_NO_STORE)

    async def static(request: Request, role: str, token: str) -> Response:
        name = request.path_params["name"]
        kind = _STATIC.get(name)
        if kind is None:
            return _error(404, "not_found", f"no {name}")
        return Response(_static(name), media_type=kind)

    async def metrics(request: Request, role: str, token: str) -> Response:
        return Response(exposition(feed.families), media_type=CONTENT_TYPE)

    async def state(request: Request, role: str, token: str) -> Response:
        return JSONResponse({**feed.snapshot(), "role": role})

    async def events(request: Request, role: str, token: str) -> Response:
        try:
            limit = int(request.query_params.get("limit", 500))
        except ValueError:
            return _error(400, "bad_request", "limit is a count")
        wanted = Filter.parse(request.query_params.get("q"), limit)
        queue = feed.subscribe(wanted)

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield _sse({**feed.snapshot(wanted), "role": role, "q": " ".join(wanted.words)})
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), keepalive_s)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    yield _sse(event)
            finally:
                feed.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=_NO_STORE)

    commands = _Commands(cluster)

    def command(action: Action) -> Callable[[Request, str, str], Awaitable[Response]]:
        async def handle(request: Request, role: str, token: str) -> Response:
            if role != OPERATOR:
                return _error(403, "read_only", "the viewer role may watch, not halt or resume")
            if request.headers.get("x-csrf-token") != csrf_for(token):
                return _error(403, "csrf", "missing or wrong X-CSRF-Token (use the console page)")
            try:
                body = json.loads(await request.body() or b"{}")
                scope = _SCOPES[str(body.get("scope", "agent"))]
                target = "*" if scope is Scope.FLEET else str(body["target"])
                reason = str(body["reason"]).strip()
            except (ValueError, KeyError, TypeError):
                return _error(400, "bad_request", "send {scope, target, reason} as JSON")
            if not reason:
                return _error(400, "bad_request", "a reason is required (it is audited)")
            try:
                sent = await asyncio.to_thread(
                    send_command, cluster, action, scope, target, f"{reason} (from the console)",
                    producer=commands.producer, agents=feed.registry(),
                )  # fmt: skip
            except MeshError as exc:
                return _error(409, exc.code, str(exc))
            record = sent.record
            return JSONResponse(
                {"command_id": record["command_id"], "requested_by": sent.operator,
                 "affected": record["affected_agents"], "notes": list(sent.notes)},
                status_code=201,
            )  # fmt: skip

        return handle

    records = Records(cluster, feed.codec, task_lookup)

    def reading(handler: Handler) -> Callable[[Request, str, str], Awaitable[Response]]:
        async def call(request: Request, role: str, token: str) -> Response:
            return await handler(request)

        return call

    routes = [
        Route("/api/audit/search", guarded(reading(records.search)), methods=["GET"]),
        Route("/api/audit/verify", guarded(reading(records.verify)), methods=["GET"]),
        Route("/api/audit/export", guarded(reading(records.export)), methods=["GET"]),
        Route("/api/tasks/{task_id}", guarded(reading(records.task)), methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Route("/events", guarded(events), methods=["GET"]),
        Route("/api/state", guarded(state), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/api/halt", guarded(command(Action.HALT)), methods=["POST"]),
        Route("/api/resume", guarded(command(Action.RESUME)), methods=["POST"]),
        Route("/static/{name:path}", guarded(static), methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        feed.start(asyncio.get_running_loop())
        await asyncio.to_thread(commands.connect)
        try:
            yield
        finally:
            await asyncio.to_thread(feed.stop)
            await asyncio.to_thread(commands.close)

    return Starlette(routes=routes, lifespan=lifespan)


_log = logging.getLogger("mesh.console")


class _Commands:
    """The producer of the console's halts and resumes, connected when the console starts:
    a new idempotent producer first waits for its producer id (about half a second on a busy
    broker), which a halt from the console must not."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self.producer: Producer | None = None

    def connect(self) -> None:
        producer = Producer(producer_config(self._cluster))
        try:
            producer.list_topics(timeout=10)
        except KafkaException as exc:  # no broker yet: each command makes its own producer
            _log.warning("console: the command producer could not connect (%s)", exc)
            return
        self.producer = producer

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(10)


_NO_STORE = {"cache-control": "no-store"}


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, default=str)}\n\n".encode()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _unauthorized(request: Request) -> Response:
    if request.url.path == "/":
        return HTMLResponse(
            "<!doctype html><title>401</title><p>Log in with the link `mesh console` printed "
            "(it carries a token from the state directory).</p>",
            status_code=401,
        )
    return _error(401, "unauthorized", "missing or wrong console token")
