"""`mesh up` / `mesh down`: the whole mesh on one machine, as background processes.

``up`` starts, in order, and waits for each to be ready:

1. the local Kafka (skipped when ``MESH_BOOTSTRAP_SERVERS`` names a cluster);
2. the catalogue's topics and every schema version;
3. the schema registry's REST API (skipped when ``MESH_SCHEMA_REGISTRY_URL`` is set);
4. the processors (registry, state, audit, kill-switch) in one ``mesh processors run``.

Each service runs under a detached keeper (:mod:`stack.keeper`) that starts it again when it
exits, with a backoff, logging every restart with its cause; the keeper's pid is kept in
``<state>/run/NAME.pid``, the service's output goes to ``<state>/logs/NAME.log``, and its
restarts are counted in ``<state>/run/NAME.restarts`` (:func:`status`, `mesh status`). ``up``
is idempotent (a live keeper is left alone); ``down`` stops exactly the processes ``up``
started (SIGTERM to each keeper, which stops its service; SIGKILL after a grace period), and the
local broker only if ``up`` started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.keyfiles import control_signers
from mesh.adapters.localkafka import local_kafka
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.errors import ProcessorError
from mesh.settings import Cluster, Settings
from stack.keeper import Restarts, read_restarts

__all__ = ["Service", "ServiceStatus", "down", "status", "up"]

Say = Callable[[str], None]
PROCESSOR_NAMES = ("registry", "state", "audit", "killswitch", "kpis")
_READY_TIMEOUT_S = 120.0
#: The port of the operator console `mesh up` runs (`mesh console --link` prints its link).
CONSOLE_PORT = 8090
#: Where the processors `mesh up` runs serve Prometheus metrics (docs/metrics.md).
METRICS_PORT = 9464
_START_ATTEMPTS = 3  # restarts while `up` waits for readiness before it gives up


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    argv: tuple[str, ...]
    ready: Callable[[Path], bool]  # given the log file

    def pid_file(self, settings: Settings) -> Path:
        return settings.state_dir / "run" / f"{self.name}.pid"

    def log_file(self, settings: Settings) -> Path:
        return settings.state_dir / "logs" / f"{self.name}.log"

    def restarts_file(self, settings: Settings) -> Path:
        return settings.state_dir / "run" / f"{self.name}.restarts"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    pid: int | None  # the keeper's, while it runs
    restarts: Restarts
    log: Path


def status(settings: Settings) -> list[ServiceStatus]:
    """Each service `mesh up` starts: whether its keeper runs, and its restarts."""
    return [
        ServiceStatus(
            service.name,
            _live_pid(service.pid_file(settings)),
            read_restarts(service.restarts_file(settings)),
            service.log_file(settings),
        )
        for service in services(settings)
    ]


def services(
    settings: Settings,
    registry_port: int = 8081,
    policy: Path | None = None,
    console_port: int = CONSOLE_PORT,
) -> list[Service]:
    mesh = (sys.executable, "-m", "cli")
    found: list[Service] = []
    if not settings.schema_registry_url:
        found.append(
            Service(
                "registry-api",
                (*mesh, "registry", "serve", "--port", str(registry_port)),
                lambda _log: _answers(f"http://127.0.0.1:{registry_port}/subjects"),
            )
        )
    policy_args = ("--policy", str(policy)) if policy else ()
    found.append(
        Service(
            "processors",
            (
                *mesh,
                "processors",
                "run",
                *PROCESSOR_NAMES,
                *policy_args,
                "--metrics-port",
                str(METRICS_PORT),
            ),
            lambda log: "ready:" in _tail(log),
        )
    )
    found.append(  # ready once its first drill ran (passed or not: `mesh status` says which)
        Service("drill", (*mesh, "drill", "run", "--every", str(DRILL_EVERY_S)), _drilled)
    )
    found.append(  # ready once it answers (401 without a token)
        Service(
            "console",
            (
                *mesh,
                "console",
                "--port",
                str(console_port),
                "--processor-metrics",
                f"http://127.0.0.1:{METRICS_PORT}/metrics",
            ),
            lambda _log: _listens(f"http://127.0.0.1:{console_port}/api/state"),
        )
    )
    return found


#: Seconds between the scheduled kill-switch drills `mesh up` runs (stack.drill).
DRILL_EVERY_S = 300


def _drilled(log: Path) -> bool:
    return "drill: " in _tail(log)


def up(
    settings: Settings,
    say: Say,
    registry_port: int = 8081,
    policy: Path | None = None,
    console_port: int = CONSOLE_PORT,
) -> Cluster:
    """Bring everything up (idempotent); returns the cluster it runs on. This host holds the
    mesh's and the operator's keys (created here on first use): the trust anchors that
    sidecars and verifying commands read, here or, through `mesh keys show`, elsewhere."""
    anchors = control_signers(settings)
    say(f"keys: trust anchors {', '.join(sorted(anchors))} (`mesh keys show` prints them)")
    cluster = Cluster(settings, _kafka_up(settings, say))
    ensured = TopicAdmin(cluster).ensure()
    say(f"topics: {len(ensured.created)} created, {len(ensured.existing)} already there")
    registry = open_registry(settings, cluster)
    try:
        say(f"schemas: {len(Serde(registry).register_all())} subjects registered")
    finally:
        registry.close()
    env = {**os.environ, "MESH_BOOTSTRAP_SERVERS": cluster.bootstrap, "PYTHONUNBUFFERED": "1"}
    for service in services(settings, registry_port, policy, console_port):
        _start(settings, service, env, say)
    return cluster


def down(settings: Settings, say: Say) -> None:
    """Stop what ``up`` started, newest first; the local broker last (if ``up`` started it)."""
    for service in reversed(services(settings)):
        _stop(settings, service.name, service.pid_file(settings), say)
    marker = settings.state_dir / "run" / "kafka.started"
    if marker.exists():
        stopped = local_kafka(settings).down()
        say("kafka: stopped" if stopped else "kafka: was not running")
        marker.unlink()


def _kafka_up(settings: Settings, say: Say) -> str:
    if settings.bootstrap_servers:
        say(f"kafka: using {settings.bootstrap_servers} (MESH_BOOTSTRAP_SERVERS)")
        return settings.bootstrap_servers
    broker = local_kafka(settings)
    status = broker.up()
    if status.started_in_s is None:
        say(f"kafka: already running at {status.bootstrap} (pid {status.pid})")
    else:
        marker = settings.state_dir / "run" / "kafka.started"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(status.pid))
        say(f"kafka: started at {status.bootstrap} in {status.started_in_s:.1f}s")
    return status.bootstrap or broker.bootstrap


def _start(settings: Settings, service: Service, env: dict[str, str], say: Say) -> None:
    pid_file, log_file = service.pid_file(settings), service.log_file(settings)
    pid = _live_pid(pid_file)
    if pid is not None:
        say(f"{service.name}: already running (pid {pid})")
        return
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log_file.write_text("")
    service.restarts_file(settings).unlink(missing_ok=True)
    keeper = (sys.executable, "-m", "stack.keeper", service.name, str(settings.state_dir), "--")
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
        (*keeper, *service.argv),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(child.pid))
    deadline = started + _READY_TIMEOUT_S
    while not service.ready(log_file):
        restarts = read_restarts(service.restarts_file(settings))
        if child.poll() is not None or restarts.count >= _START_ATTEMPTS:
            _stop(settings, service.name, pid_file, lambda _: None)
            cause = restarts.given_up or restarts.last_cause or f"exit {child.returncode}"
            raise ProcessorError(
                f"{service.name} did not start ({cause}); its log ({log_file}) ends with:\n"
                f"{_tail(log_file, 1500)}"
            )
        if time.monotonic() > deadline:
            raise ProcessorError(
                f"{service.name} was not ready after {_READY_TIMEOUT_S:.0f}s; see {log_file}"
            )
        time.sleep(0.2)
    say(f"{service.name}: ready in {time.monotonic() - started:.1f}s (pid {child.pid})")


def _stop(settings: Settings, name: str, pid_file: Path, say: Say) -> None:
    pid = _live_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        say(f"{name}: killed (did not stop within 20s)")
    else:
        say(f"{name}: stopped")
    pid_file.unlink(missing_ok=True)


def _live_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - size))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _listens(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
