"""The console's views over the log: audit search, a windowed verify with progress, export,
and a task's state as of a time.

* ``GET /api/audit/search?agent=&task=&from=&to=&limit=``: the audit records that concern an
  agent and/or a task in a window, decoded, each with its chain position (``audit`` partition
  and ``sequence``), in source-time order (the last ``limit``).
* ``GET /api/audit/verify?from=&to=``: JSON Lines, one per audit partition as its chain is
  verified (the page shows the progress), then the verdict.
* ``GET /api/audit/export?from=&to=&agent=&task=``: the window as JSON Lines, a download (the
  format of `mesh audit export`).
* ``GET /api/tasks/{id}?as_of=``: the task's shared context as of a time, rebuilt from the log
  by the same fold as the live projection (`mesh state show --as-of`), given by the service
  that starts the console (the console does not reach into the processors).

Times are epoch milliseconds. Reads run in worker threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mesh.adapters.audit.export import decoded_view, export_line, involves
from mesh.adapters.audit.log import AuditLog, Window, in_source_order, verify_one
from mesh.adapters.keyfiles import mesh_anchor
from mesh.adapters.serde.messages import MessageCodec
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["Records", "TaskLookup"]

#: (task id, as of ms or None) -> (the task's state as JSON or None, records skipped)
TaskLookup = Callable[[str, int | None], tuple[dict[str, Any] | None, int]]


class Records:
    def __init__(self, cluster: Cluster, codec: MessageCodec, task_lookup: TaskLookup | None):
        self.cluster, self.codec, self.task_lookup = cluster, codec, task_lookup

    async def search(self, request: Request) -> Response:
        q = request.query_params
        try:
            window, limit = _window(q), min(int(q.get("limit", 200)), 2000)
        except ValueError:
            return _bad("from, to and limit are epoch milliseconds and a count")
        agent, task = q.get("agent") or None, q.get("task") or None
        found = await asyncio.to_thread(self._search, window, agent, task, limit)
        return JSONResponse({"records": found})

    def _search(
        self, window: Window, agent: str | None, task: str | None, limit: int
    ) -> list[dict[str, Any]]:
        log = AuditLog(self.cluster, self.codec.serde)
        found: list[dict[str, Any]] = []
        for _, _, link in in_source_order(log, window):
            view = decoded_view(link, self.codec)
            if involves(view, agent, task):
                found.append(view)  # its "audit" is the chain position, partition:sequence
                if len(found) > limit:
                    found.pop(0)
        return found

    async def verify(self, request: Request) -> Response:
        try:
            window = _window(request.query_params)
        except ValueError:
            return _bad("from and to are epoch milliseconds")

        async def lines() -> AsyncIterator[bytes]:
            log = AuditLog(self.cluster, self.codec.serde)
            key = mesh_anchor(self.cluster.settings)
            ok, records = True, 0
            try:
                partitions = await asyncio.to_thread(log.partitions)
                for partition in partitions:
                    result = await asyncio.to_thread(verify_one, log, partition, window, key)
                    ok &= result.problem is None
                    records += result.records
                    yield _line({
                        "partition": partition, "of": len(partitions), "records": result.records,
                        "ok": result.problem is None,
                        "problem": None if result.problem is None else str(result.problem),
                        "sealed_through": result.sealed_through,
                    })  # fmt: skip
            except MeshError as exc:
                ok = False
                yield _line({"error": str(exc)})
            yield _line({"done": True, "ok": ok, "records": records})

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def export(self, request: Request) -> Response:
        q = request.query_params
        try:
            window = _window(q)
        except ValueError:
            return _bad("from and to are epoch milliseconds")
        agent, task = q.get("agent") or None, q.get("task") or None
        lines = await asyncio.to_thread(lambda: list(self._export(window, agent, task)))
        name = f"audit-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.jsonl"
        return Response(
            b"".join(lines),
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    def _export(self, window: Window, agent: str | None, task: str | None) -> Iterator[bytes]:
        log = AuditLog(self.cluster, self.codec.serde)
        for partition, offset, link in in_source_order(log, window):
            if (agent is None and task is None) or involves(
                decoded_view(link, self.codec), agent, task
            ):
                yield _line({"audit_partition": partition, **export_line(link, offset)})

    async def task(self, request: Request) -> Response:
        if self.task_lookup is None:
            return JSONResponse({"error": "unavailable", "message": "no task lookup"}, 503)
        task_id = request.path_params["task_id"]
        as_of = request.query_params.get("as_of")
        try:
            at = int(as_of) if as_of else None
        except ValueError:
            return _bad("as_of is epoch milliseconds")
        lookup = self.task_lookup
        try:
            state, skipped = await asyncio.to_thread(lookup, task_id, at)
        except MeshError as exc:
            return JSONResponse({"error": exc.code, "message": str(exc)}, 409)
        if state is None:
            return JSONResponse({"error": "unknown_task", "message": f"no task {task_id!r}"}, 404)
        return JSONResponse({"task": state, "skipped": skipped, "as_of": at})


def _window(q: Any) -> Window:
    start, end = q.get("from"), q.get("to")
    return Window(int(start) if start else None, int(end) if end else None)


def _line(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, default=str) + "\n").encode()


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": "bad_request", "message": message}, status_code=400)
