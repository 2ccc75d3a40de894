"""A processor process whose output is read as it comes, to time its recovery."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

from mesh.settings import Settings
from tests.integration.fleet import spawn_processor


class Watched:
    """`mesh processors run NAME` in a child process, its lines kept with when they came."""

    def __init__(self, settings: Settings, name: str, instance: str = "0") -> None:
        self.started = time.monotonic()
        self.process = spawn_processor(settings, name, instance)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def ready_after_s(self, timeout_s: float) -> float:
        """Seconds from the start of the process to its ``ready:`` line."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if "ready:" in line:
                    return at - self.started
            if self.process.poll() is not None:
                raise AssertionError(f"the processor exited: {self.output()}")
            time.sleep(0.02)
        raise AssertionError(f"not ready within {timeout_s}s: {self.output()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)
