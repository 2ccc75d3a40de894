"""Issue 11, traces: a two-hop exchange through two sidecars (a message, then the reply sent
while handling it) is one connected OpenTelemetry trace: send, receive, handle, send,
receive, each the child of the one before, and the state processor's work on the message a
child of its send (the SDK's in-memory exporter collects them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.test_sidecar import Mesh, _until, mesh  # noqa: F401 - the fixture

EXPORTED = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> Iterator[None]:
    """The process's tracer provider (set once per process): the sidecars' spans go to
    EXPORTED while this module runs."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTED))
    trace.set_tracer_provider(provider)
    yield
    provider.shutdown()  # later tests' spans are not kept
    EXPORTED.clear()


async def test_a_message_and_its_reply_are_one_connected_trace(mesh: Mesh) -> None:  # noqa: F811
    async with mesh.sidecar("asker") as asker, mesh.sidecar("answerer") as answerer:
        await _until(lambda: {"asker", "answerer"} <= set(asker.agents()), "both registered")
        EXPORTED.clear()
        await asker.send("answerer", text="how much?", task_id="t-trace")
        question = await answerer.receive(timeout_s=10)
        assert question is not None
        with answerer.serving(question):  # as the SDK runs a handler
            await answerer.send("asker", text="$4")
        answer = await asker.receive(timeout_s=10)
        assert answer is not None
    spans = {s.name: s for s in EXPORTED.get_finished_spans()
             if s.attributes and ("mesh.sender" in s.attributes or "mesh.recipient" in s.attributes
                                  or "mesh.agent" in s.attributes)}  # fmt: skip
    sends = sorted((s for s in EXPORTED.get_finished_spans() if s.name == "send"),
                   key=lambda s: s.start_time or 0)  # fmt: skip
    receives = sorted((s for s in EXPORTED.get_finished_spans() if s.name == "receive"),
                      key=lambda s: s.start_time or 0)  # fmt: skip
    handle = spans["handle mesh.a2a.Message"]
    assert len(sends) == 2 and len(receives) == 2
    chain: list[Any] = [sends[0], receives[0], handle, sends[1], receives[1]]
    assert len({s.context.trace_id for s in chain}) == 1  # one trace
    assert receives[0].parent.span_id == sends[0].context.span_id
    assert handle.parent.span_id == sends[0].context.span_id
    assert sends[1].parent.span_id == handle.context.span_id
    assert receives[1].parent.span_id == sends[1].context.span_id
    assert question.envelope.traceparent is not None
    assert f"{sends[0].context.span_id:016x}" in question.envelope.traceparent
    deadline = time.monotonic() + 45  # the state processor's work on the messages: children
    send_ids = {s.context.span_id for s in sends}
    while not (processed := [s for s in EXPORTED.get_finished_spans()
                             if s.name == "process state"
                             and s.parent is not None
                             and s.parent.span_id in send_ids]):  # fmt: skip
        assert time.monotonic() < deadline, "no processor span in the trace"
        await asyncio.sleep(0.1)
    assert processed[0].context.trace_id == sends[0].context.trace_id
