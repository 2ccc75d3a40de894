"""Run named processors in the foreground until SIGINT/SIGTERM (``mesh processors run``)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mesh.errors import ConfigError
from mesh.identity import PublicKeys
from mesh.operator import operator_key
from mesh.registry.port import SchemaRegistry
from mesh.serde.codec import Serde
from mesh.serde.messages import MessageCodec
from mesh.settings import Settings
from processors.registry import RegistryProcessor
from processors.registry.view import RegistryKeys
from processors.runtime.engine import Engine, EngineConfig
from processors.state import StateProcessor

__all__ = ["PROCESSORS", "ProcessorOptions", "build", "run_processors"]


@dataclass(frozen=True, slots=True)
class ProcessorOptions:
    """Per-processor knobs of `mesh processors run`."""

    stale_after_ms: int = 15_000


def _registry(settings: Settings, bootstrap: str, serde: Serde, options: ProcessorOptions) -> Any:
    operator = operator_key(settings)
    return RegistryProcessor(
        stale_after_ms=options.stale_after_ms,
        operator_keys={operator.agent_id: operator.public_bytes},
    )


def _state(settings: Settings, bootstrap: str, serde: Serde, options: ProcessorOptions) -> Any:
    return StateProcessor(RegistryKeys(settings, bootstrap, serde))


PROCESSORS: dict[str, Callable[[Settings, str, Serde, ProcessorOptions], Any]] = {
    "registry": _registry,
    "state": _state,
}


def build(
    names: list[str],
    settings: Settings,
    bootstrap: str,
    registry: SchemaRegistry,
    config: EngineConfig,
    options: ProcessorOptions | None = None,
) -> list[Engine[Any]]:
    unknown = [n for n in names if n not in PROCESSORS]
    if unknown or not names:
        raise ConfigError(
            f"unknown processor {unknown[0] if unknown else '(none given)'}; "
            f"choose from: {', '.join(PROCESSORS)}"
        )
    serde = Serde(registry)
    serde.register_all()
    codec = MessageCodec(serde, PublicKeys(), max_bytes=settings.max_message_bytes)
    return [
        Engine(
            PROCESSORS[n](settings, bootstrap, serde, options or ProcessorOptions()),
            settings,
            bootstrap,
            codec,
            config,
        )
        for n in names
    ]


def run_processors(engines: list[Engine[Any]], report: Callable[[str], None]) -> None:
    """Run each engine in a thread; stop all on a signal or when any one fails (loudly)."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def work(engine: Engine[Any]) -> None:
        try:
            engine.run(until=stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            failures.append(exc)
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = [threading.Thread(target=work, args=(e,), name=e.group) for e in engines]
    for thread in threads:
        thread.start()
    report(f"running {', '.join(e.processor.name for e in engines)}; Ctrl-C stops")
    next_report = time.monotonic() + 5
    while not stop.wait(0.2):
        if time.monotonic() >= next_report:
            next_report += 5
            for engine in engines:
                report(f"{engine.processor.name}: {engine.metrics.snapshot()}")
    for thread in threads:
        thread.join(30)
    if failures:
        raise failures[0]
    report("stopped cleanly")
