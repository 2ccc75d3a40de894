"""Prometheus exposition for the mesh's long-running processes (``/metrics``).

A process describes what it counts as :class:`Family` values, built fresh from its own
counters on every scrape; this module turns them into the text format with the official
client (``prometheus_client``), either as bytes for a route of an app the process already
serves (the sidecar, the console) or from a small HTTP server of its own (the processors).
Names follow Prometheus' conventions: ``mesh_`` prefix, base units, ``_total`` counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Family", "counters", "exposition", "serve_metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # without _total for a counter
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def metric(self) -> Metric:
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        found = cls(self.name, self.help, labels=list(self.labels))
        for values, value in self.samples:
            found.add_metric(list(values), value)
        return found


class _Collector(Collector):
    def __init__(self, families: Callable[[], Iterable[Family]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families():
            yield family.metric()


def _registry(families: Callable[[], Iterable[Family]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))
    return registry


def exposition(families: Callable[[], Iterable[Family]]) -> bytes:
    """The text format of ``families()`` now."""
    return generate_latest(_registry(families))


def serve_metrics(
    families: Callable[[], Iterable[Family]], port: int, host: str = "127.0.0.1"
) -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=_registry(families))


def counters(
    name: str, help: str, label: str, values: Mapping[str, float], kind: str = "counter"
) -> Family:
    """One family with one label, a sample per key of ``values``."""
    return Family(name, kind, help, (label,), [((k,), v) for k, v in sorted(values.items())])
