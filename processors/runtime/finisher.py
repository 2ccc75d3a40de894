"""The thread a processor's transaction finishes on (``Engine._finish``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["DaemonWorker"]


class DaemonWorker:
    """One daemon thread that runs the transaction's finish (``Engine._finish``).

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a call librdkafka
    never returns from (the wedged commit this worker exists to bound) kept a cleanly stopped
    processor from exiting. A daemon thread is left behind instead.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._loop, name="mesh-finish", daemon=True).start()

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((call, future))
        return future

    def shutdown(self) -> None:
        """Stop taking calls (a call in progress is abandoned with the thread)."""
        self._calls.put(None)

    def _loop(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                future.set_exception(exc)
