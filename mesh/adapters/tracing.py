"""OpenTelemetry traces of a task's path across agents, carried in the envelope.

Every message's envelope carries a W3C ``traceparent``. The sidecar makes each hop a span:
``send`` (a producer span; the message's ``traceparent`` is this span, so the receiver's spans
are its children), ``receive`` (a consumer span, child of the message's span) and ``handle``
(the agent's code working on a delivered message: whatever it sends from there is a child of
it); a processor that decodes a message records ``process <name>``, a child of the message's
span. A task that goes from agent to agent is therefore one trace.

Spans are exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set (:func:`configure_from_env`, service name from
``OTEL_SERVICE_NAME``). Without a configured tracer provider, OpenTelemetry's API is a no-op
and the envelope keeps the trace context the mesh made itself (:func:`traceparent_or`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["SpanKind", "configure_from_env", "record_span", "span", "traceparent_or"]

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = "agent-mesh"
_configured = threading.Lock()
_done: list[bool] = []


def configure_from_env(service: str) -> bool:
    """Export spans over OTLP/HTTP if the environment names an endpoint (once per process);
    True if this call configured it."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        return False
    with _configured:
        if _done:
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        name = os.environ.get("OTEL_SERVICE_NAME", service)
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _done.append(True)
        return True


@contextlib.contextmanager
def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span]:
    """A span, current inside the block. ``parent``: a ``traceparent`` to continue when no
    span is current here (a message's); with neither, a new trace."""
    tracer = trace.get_tracer(_TRACER)
    ctx = None
    if parent and not trace.get_current_span().get_span_context().is_valid:
        ctx = _PROPAGATOR.extract({"traceparent": parent})
    with tracer.start_as_current_span(
        name, context=ctx, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


def record_span(
    name: str,
    kind: SpanKind,
    parent: str,
    start_ns: int,
    attributes: Mapping[str, str | int] | None = None,
) -> None:
    """A span that began at ``start_ns`` and ends now, child of the ``parent`` traceparent
    (a processor's work on a record it decoded anyway: nothing is decoded for tracing)."""
    ctx = _PROPAGATOR.extract({"traceparent": parent})
    tracer = trace.get_tracer(_TRACER)
    done = tracer.start_span(
        name, context=ctx, kind=kind, attributes=dict(attributes or {}), start_time=start_ns
    )
    done.end()


def traceparent_or(fallback: str | None) -> str | None:
    """The current span as a ``traceparent`` (what a message sent now carries), or
    ``fallback`` when no span is recording (tracing not configured)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return fallback
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, otel_context.get_current())
    return carrier.get("traceparent", fallback)
