"""The processors' runner supervises its engines: a retriable failure is restarted with a
backoff and counted; anything else stops every engine and is raised."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mesh.errors import ProcessorFencedError, TransactionAbortedError
from processors.runtime.runner import run_processors


class _Job:
    def __init__(self, name: str) -> None:
        self.name = name


class _Metrics:
    transactions = 0

    def snapshot(self) -> str:
        return "ok"


class FlakyEngine:
    """Fails with ``errors`` one run after the other, then runs until told to stop."""

    def __init__(self, name: str, errors: list[Exception], stop: threading.Event) -> None:
        self.job, self.group, self.metrics = _Job(name), f"mesh-{name}", _Metrics()
        self.errors, self.stop, self.runs = errors, stop, 0
        self.ready = False

    def run(self, until: Any) -> None:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        self.ready = True
        self.stop.set()  # a clean run: the test is over


def test_a_retriable_failure_restarts_the_engine_and_is_reported() -> None:
    stop, lines = threading.Event(), []
    engine = FlakyEngine("audit", [TransactionAbortedError("commit timed out")] * 2, stop)
    run_processors([engine], lines.append, backoff=(0.001, 0.002), stop=stop)  # type: ignore[list-item]
    assert engine.runs == 3
    restarts = [line for line in lines if "restart" in line]
    assert restarts == [
        "audit: restart 1 in 0.0s after: commit timed out",
        "audit: restart 2 in 0.0s after: commit timed out",
    ]


def test_fencing_stops_every_engine_and_is_raised() -> None:
    stop = threading.Event()
    fenced = FlakyEngine("registry", [ProcessorFencedError("a newer instance")], stop)
    with pytest.raises(ProcessorFencedError, match="a newer instance"):
        run_processors([fenced], lambda _: None, backoff=(0.001, 0.002), stop=stop)  # type: ignore[list-item]
    assert fenced.runs == 1


class RecoveringEngine(FlakyEngine):
    """Each run commits (it recovered) before it fails: a broker that restarts again later."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.metrics = _Metrics()

    def run(self, until: Any) -> None:
        self.metrics.transactions += 1
        super().run(until)


def test_the_backoff_starts_over_once_a_run_has_committed() -> None:
    stop, lines = threading.Event(), []
    errors = [TransactionAbortedError("broker restarted")] * 3
    engine = RecoveringEngine("killswitch", errors, stop)
    run_processors([engine], lines.append, backoff=(0.1, 10.0), stop=stop)  # type: ignore[list-item]
    delays = [line.split(" in ")[1].split("s ")[0] for line in lines if "restart" in line]
    assert delays == ["0.1", "0.1", "0.1"]  # not 0.1, 0.2, 0.4: each outage is a first one
