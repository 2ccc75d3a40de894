"""Run named processors in the foreground until SIGINT/SIGTERM (``mesh processors run``)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.adapters.keyfiles import control_signers, mesh_key, operator_key
from mesh.adapters.metrics import serve_metrics
from mesh.adapters.schemaregistry.port import SchemaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import PublicKeys
from mesh.errors import ConfigError, MeshError
from mesh.settings import Cluster
from processors.api import Processor
from processors.audit import AuditProcessor
from processors.killswitch import KillSwitchProcessor, Policy
from processors.kpis import KpisProcessor
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine, EngineConfig
from processors.runtime.exposition import processor_families
from processors.state import StateProcessor

__all__ = ["PROCESSORS", "ProcessorOptions", "build", "run_processors"]


@dataclass(frozen=True, slots=True)
class ProcessorOptions:
    """Per-processor knobs of `mesh processors run`."""

    stale_after_ms: int = 15_000
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True, slots=True)
class _Build:
    cluster: Cluster
    codec: MessageCodec
    options: ProcessorOptions
    instance: str


def _registry(b: _Build) -> Processor[Any]:
    operator = operator_key(b.cluster.settings)
    return RegistryProcessor(
        mesh_key(b.cluster.settings),
        stale_after_ms=b.options.stale_after_ms,
        operator_keys={operator.agent_id: operator.public_bytes},
    )


def _state(b: _Build) -> Processor[Any]:
    return StateProcessor()


def _audit(b: _Build) -> Processor[Any]:
    return AuditProcessor(mesh_key(b.cluster.settings))


def _killswitch(b: _Build) -> Processor[Any]:
    signers = control_signers(b.cluster.settings)
    return KillSwitchProcessor(
        b.codec, mesh_key(b.cluster.settings), b.options.policy, signers, b.instance
    )


def _kpis(b: _Build) -> Processor[Any]:
    return KpisProcessor(b.codec.serde, control_signers(b.cluster.settings))


PROCESSORS: dict[str, Callable[[_Build], Processor[Any]]] = {
    "registry": _registry,
    "state": _state,
    "audit": _audit,
    "killswitch": _killswitch,
    "kpis": _kpis,
}


def build(
    names: list[str],
    cluster: Cluster,
    registry: SchemaRegistry,
    config: EngineConfig,
    options: ProcessorOptions | None = None,
) -> list[Engine]:
    unknown = [n for n in names if n not in PROCESSORS]
    if unknown or not names:
        raise ConfigError(
            f"unknown processor {unknown[0] if unknown else '(none given)'}; "
            f"choose from: {', '.join(PROCESSORS)}"
        )
    serde = Serde(registry)
    serde.register_all()
    codec = MessageCodec(serde, PublicKeys(), max_bytes=cluster.settings.max_message_bytes)
    b = _Build(cluster, codec, options or ProcessorOptions(), config.instance)
    return [Engine.keyed(PROCESSORS[n](b), cluster, codec, config) for n in names]


def run_processors(
    engines: list[Engine],
    report: Callable[[str], None],
    backoff: tuple[float, float] = (0.5, 30.0),
    stop: threading.Event | None = None,
    health_file: Path | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run each engine in a thread, supervised, until SIGINT/SIGTERM.

    An engine that stops on a retriable error (the broker went away, a transaction did not
    commit) is started again after a backoff (``backoff``: first and longest, doubling),
    which restores its store from what committed; every restart is reported with its cause
    and counted (``restarts``). The backoff starts over once a run has committed: a processor
    that recovered meets the next outage with the first delay, not the next in a series.
    Anything else
    (configuration, fencing by a newer instance, a bug) stops every engine and is raised: a
    process that cannot do its job says so and exits.
    ``stop``: set it to stop (default: a new event set by SIGINT and SIGTERM).
    ``health_file``: touched every second while every engine is assigned and restored, and
    removed on the way out (`mesh processors probe` reads its age: a liveness probe).
    ``metrics_port``: Prometheus metrics on ``127.0.0.1:PORT/metrics``
    (:mod:`processors.runtime.exposition`).
    """
    if stop is None:
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    failures: list[BaseException] = []
    restarts = dict.fromkeys((e.job.name for e in engines), 0)

    def work(engine: Engine) -> None:
        delay = backoff[0]
        while not stop.is_set():
            committed = engine.metrics.transactions
            try:
                engine.run(until=stop.is_set)
                return
            except MeshError as exc:
                if not exc.retriable:
                    failures.append(exc)
                    stop.set()
                    return
                restarts[engine.job.name] += 1
                if engine.metrics.transactions > committed:  # it had recovered: a new outage
                    delay = backoff[0]
                report(
                    f"{engine.job.name}: restart {restarts[engine.job.name]} in {delay:.1f}s "
                    f"after: {exc}"
                )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
                failures.append(exc)
                stop.set()
                return
            stop.wait(delay)
            delay = min(delay * 2, backoff[1])

    if metrics_port is not None:
        try:
            serve_metrics(lambda: processor_families(engines, restarts), metrics_port)
            report(f"metrics: http://127.0.0.1:{metrics_port}/metrics")
        except OSError as exc:  # metrics are for watching; the processors run without them
            report(f"metrics: not served, port {metrics_port}: {exc.strerror}")
    threads = [threading.Thread(target=work, args=(e,), name=e.group) for e in engines]
    for thread in threads:
        thread.start()
    report(f"running {', '.join(e.job.name for e in engines)}; Ctrl-C stops")
    next_report = time.monotonic() + 5
    announced = False
    next_health = 0.0
    while not stop.wait(0.2):
        ready = all(e.ready for e in engines)
        if not announced and ready:
            announced = True
            report(f"ready: {', '.join(e.job.name for e in engines)} assigned and restored")
        if health_file is not None and ready and time.monotonic() >= next_health:
            next_health = time.monotonic() + 1.0
            health_file.parent.mkdir(parents=True, exist_ok=True)
            health_file.write_text(f"{time.time():.3f}\n")
        if time.monotonic() >= next_report:
            next_report += 5
            for engine in engines:
                snapshot = engine.metrics.snapshot()
                report(f"{engine.job.name}: {snapshot}, restarts={restarts[engine.job.name]}")
    for thread in threads:
        thread.join(30)
    if health_file is not None:
        health_file.unlink(missing_ok=True)
    if failures:
        raise failures[0]
    report("stopped cleanly")
