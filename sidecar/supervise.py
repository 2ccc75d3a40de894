"""Supervised background loops: a loop that fails is logged, counted and restarted with a
growing backoff (0.1 s doubling to 5 s), never left dead and never swallowed silently.

``on_exit`` runs every time a loop stops for any reason but cancellation, before its restart
(the control follower uses it to make the sidecar fail closed at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Supervisor"]

_log = logging.getLogger("mesh.sidecar")
Loop = Callable[[], Awaitable[None]]


@dataclass
class Supervisor:
    name: str
    first_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    restarts: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, what: str, loop: Loop, on_exit: Callable[[], None] | None = None) -> None:
        task = asyncio.create_task(self._keep(what, loop, on_exit), name=f"{self.name} {what}")
        self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _keep(self, what: str, loop: Loop, on_exit: Callable[[], None] | None) -> None:
        while True:
            try:
                await loop()
                reason = "returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, counted and restarted below
                reason = f"{type(exc).__name__}: {exc}"
            if on_exit is not None:
                on_exit()
            self.restarts[what] = self.restarts.get(what, 0) + 1
            self.last_error[what] = reason
            backoff = min(self.first_backoff_s * 2 ** (self.restarts[what] - 1), self.max_backoff_s)
            _log.error(
                "%s: %s stopped (%s); restart %d in %.1fs",
                self.name, what, reason, self.restarts[what], backoff,
            )  # fmt: skip
            await asyncio.sleep(backoff)
