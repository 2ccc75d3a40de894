"""The keeper `mesh up` leaves behind for each service: restarts with a cause, final exits."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from stack.keeper import read_restarts

ROOT = Path(__file__).resolve().parents[2]


def keeper(tmp_path: Path, script: str) -> subprocess.Popen[bytes]:
    (tmp_path / "logs").mkdir()
    argv = [sys.executable, "-m", "stack.keeper", "svc", str(tmp_path), "--"]
    return subprocess.Popen([*argv, sys.executable, "-c", script], cwd=ROOT)


def test_a_service_that_exits_is_started_again_and_each_restart_is_recorded(
    tmp_path: Path,
) -> None:
    process = keeper(tmp_path, "import sys; print('lost the broker', flush=True); sys.exit(1)")
    record = tmp_path / "run" / "svc.restarts"
    deadline = time.monotonic() + 20
    while read_restarts(record).count < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    restarts = read_restarts(record)
    assert restarts.last_cause == "exit code 1: lost the broker" and restarts.given_up == ""
    log = (tmp_path / "logs" / "svc.log").read_text()
    assert "keeper: svc exited (exit code 1: lost the broker); restart 1 in 0.5s" in log


def test_a_fenced_service_is_not_started_again(tmp_path: Path) -> None:
    process = keeper(tmp_path, "import sys; print('fenced', flush=True); sys.exit(3)")
    assert process.wait(30) == 3
    restarts = read_restarts(tmp_path / "run" / "svc.restarts")
    assert restarts.count == 0
    assert restarts.given_up == "fenced by a newer instance with the same id (exit code 3: fenced)"


def test_stopping_the_keeper_stops_its_service(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    script = (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path({str(marker)!r}).touch(), "
        "sys.exit(0)))\n"
        "print('ready:', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = keeper(tmp_path, script)
    log = tmp_path / "logs" / "svc.log"
    deadline = time.monotonic() + 20
    while "ready:" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0 and marker.exists()
    assert read_restarts(tmp_path / "run" / "svc.restarts").count == 0
