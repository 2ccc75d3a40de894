"""Keep one service running: the process `mesh up` leaves behind for each service.

``python -m stack.keeper NAME STATE_DIR -- ARGV...`` runs ``ARGV`` with its output appended to
``<state>/logs/NAME.log``, and when it exits starts it again after a backoff (0.5 s, doubling
to 30 s; back to 0.5 s once a run lasted a minute). Every restart is logged with its cause (the
exit code and the last line the service wrote) and counted in ``<state>/run/NAME.restarts``
(JSON), which `mesh status` shows.

Two exits are final, because starting again cannot help: 2 (bad configuration) and 3 (fenced
by a newer instance with the same id: two of them would fence each other in turn). The keeper
records why and exits too.

SIGTERM or SIGINT stops the service (SIGTERM, then SIGKILL after 20 s) and then the keeper:
`mesh down` signals the keeper, whose pid is the service's pid file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["FINAL_EXITS", "Restarts", "keep", "read_restarts"]

#: Exit codes after which the service is not started again (see the module docstring).
FINAL_EXITS = {2: "bad configuration", 3: "fenced by a newer instance with the same id"}
_FIRST_BACKOFF_S, _LONGEST_BACKOFF_S, _STEADY_S = 0.5, 30.0, 60.0


@dataclass
class Restarts:
    count: int = 0
    last_cause: str = ""
    last_at: float = 0.0
    given_up: str = ""  # why the keeper stopped starting it, if it did


def read_restarts(path: Path) -> Restarts:
    try:
        return Restarts(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return Restarts()


def keep(name: str, state_dir: Path, argv: list[str]) -> int:
    log_path = state_dir / "logs" / f"{name}.log"
    record = state_dir / "run" / f"{name}.restarts"
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(*_: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts = Restarts()
    backoff = _FIRST_BACKOFF_S
    while not stopping.is_set():
        started = time.monotonic()
        with log_path.open("ab") as log:
            child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        code = _wait(child, stopping)
        if stopping.is_set():
            return 0
        cause = f"exit code {code}" + _last_line(log_path)
        if code in FINAL_EXITS:
            restarts.given_up = f"{FINAL_EXITS[code]} ({cause})"
            _save(record, restarts)
            _note(log_path, f"{name} is not started again: {restarts.given_up}")
            return code
        if time.monotonic() - started > _STEADY_S:
            backoff = _FIRST_BACKOFF_S
        restarts.count += 1
        restarts.last_cause, restarts.last_at = cause, time.time()
        _save(record, restarts)
        _note(log_path, f"{name} exited ({cause}); restart {restarts.count} in {backoff:.1f}s")
        stopping.wait(backoff)
        backoff = min(backoff * 2, _LONGEST_BACKOFF_S)
    return 0


def _wait(child: subprocess.Popen[bytes], stopping: threading.Event) -> int:
    while True:
        try:
            return child.wait(timeout=0.5 if not stopping.is_set() else 20)
        except subprocess.TimeoutExpired:
            if stopping.is_set():  # asked to stop and still running after 20 s
                child.kill()
                return child.wait()


def _last_line(log_path: Path) -> str:
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log_path.stat().st_size - 2048))
            lines = [x for x in log.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return f": {lines[-1].strip()[:300]}" if lines else ""


def _note(log_path: Path, text: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with log_path.open("a") as log:
        log.write(f"{stamp} keeper: {text}\n")


def _save(path: Path, restarts: Restarts) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(restarts)))


def main() -> None:
    name, state_dir, separator, *argv = sys.argv[1:]
    if separator != "--" or not argv:
        raise SystemExit("usage: python -m stack.keeper NAME STATE_DIR -- ARGV...")
    sys.exit(keep(name, Path(state_dir), argv))


if __name__ == "__main__":
    main()
