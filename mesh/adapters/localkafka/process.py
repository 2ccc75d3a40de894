"""The local brokers' processes and ports: whether a port is free, whether a pid is the Kafka
a directory started, stopping one, and whether a cluster answers (shared by the single broker
and the nodes of a local cluster)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from mesh.errors import LocalKafkaError

__all__ = ["CHILDREN", "alive", "broker_count", "is_our_kafka", "refuse_taken_port", "terminate"]

_STOP_TIMEOUT_S = 30.0
#: Brokers this process started, kept so they can be reaped (and not warned about) on down.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def broker_count(bootstrap: str, security: dict[str, str] | None = None) -> int:
    """How many brokers the cluster at ``bootstrap`` lists (0: it does not answer yet)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex((host, int(port))) != 0:
            return 0  # not listening yet; don't let librdkafka log connection refusals
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": 1000,
        "log_level": 0,
    }
    config.update(security or {})
    admin = AdminClient(config)
    try:
        return len(admin.list_topics(timeout=1.0).brokers)
    except KafkaException:
        return 0


def refuse_taken_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise LocalKafkaError(
                f"port {port} on 127.0.0.1 is already in use by another process; "
                "choose another with --port (the controller uses port+1) or MESH_KAFKA_PORT"
            )


def is_our_kafka(pid: object, properties: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and str(properties).encode() in cmdline


def terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    child = CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()


def alive(pid: int) -> bool:
    child = CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return False
    return state != "Z"
