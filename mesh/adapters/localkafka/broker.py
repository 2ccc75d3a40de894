"""A real Apache Kafka node (KRaft, broker + controller) run from the official jars: the local
single broker, or one node of a local cluster (:mod:`mesh.adapters.localkafka.cluster`).

Lifecycle rules, so that ``up``/``down`` can be run by hand and by tests without surprises:

* ``up`` is a no-op when this directory's broker already runs; it waits until the broker
  answers a metadata request before it returns the bootstrap address.
* ``down`` stops only the process this directory's ``broker.json`` names, and only if that
  process is still the Kafka we started (its command line names our properties file).
* Data lives in ``<dir>/data`` and survives ``down``/``up``; it is formatted once.
* With ``tls``, a second listener takes TLS on ``port + 2`` (certificates made once in
  ``<dir>/tls``, :mod:`mesh.adapters.localkafka.tls`); clients trust ``<dir>/tls/ca.pem``.
* With ``secure``, the only client listener on ``port`` is SASL/SCRAM-SHA-512 and Kafka's own
  authorizer is on (nothing allowed without an ACL): the broker talks to itself as the admin
  principal, whose credential is made at format time (``<dir>/secure/admin.json``, owner-only);
  `mesh kafka users` adds principals and `mesh acl apply` writes the mesh's ACLs.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from mesh.adapters.localkafka.jars import INFRA_DIR, classpath, ensure_jars
from mesh.adapters.localkafka.process import (
    CHILDREN,
    broker_count,
    is_our_kafka,
    refuse_taken_port,
    terminate,
)
from mesh.adapters.localkafka.tls import ensure_broker_tls
from mesh.errors import LocalKafkaError

__all__ = ["BrokerStatus", "LocalKafka", "Quorum"]

_READY_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class Quorum:
    """Where a node sits in its cluster: its id, every controller (``id@host:port,...``), the
    cluster id all nodes are formatted with, and how many replicas internal topics get."""

    node_id: int = 1
    voters: str | None = None  # None: this node alone
    cluster_id: str | None = None  # None: a fresh one at format time
    replicas: int = 1

    @property
    def min_insync(self) -> int:
        """Writes a node acknowledges only once this many replicas have them (2 of 3)."""
        return 1 if self.replicas < 3 else 2


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    bootstrap: str | None = None
    pid: int | None = None
    directory: Path | None = None
    started_in_s: float | None = None


class LocalKafka:
    """One local broker, owned by one directory."""

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        version: str,
        heap: str = "1g",
        cache_dir: Path | None = None,
        tls: bool = False,
        secure: bool = False,
        quorum: Quorum | None = None,
    ) -> None:
        self.directory = directory
        self.quorum = quorum or Quorum()
        self.port = port
        self.controller_port = port + 1
        self.tls_port = port + 2 if tls else None
        self.secure = secure
        self.version = version
        self.heap = heap
        self.cache_dir = cache_dir

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls_bootstrap(self) -> str | None:
        """The TLS listener's address (None: no TLS listener)."""
        return None if self.tls_port is None else f"127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the TLS listener's certificate (MESH_SSL_CA_LOCATION)."""
        return self.directory / "tls" / "ca.pem"

    def admin_security(self) -> dict[str, str] | None:
        """librdkafka settings of the admin principal (secure mode; None otherwise)."""
        if not self.secure:
            return None
        user, password = self.admin_credentials()
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
        }

    def admin_credentials(self) -> tuple[str, str]:
        """The admin principal's SCRAM user name and password (secure mode)."""
        data = json.loads((self.directory / "secure" / "admin.json").read_text())
        return str(data["username"]), str(data["password"])

    @property
    def _state_file(self) -> Path:
        return self.directory / "broker.json"

    @property
    def _properties(self) -> Path:
        return self.directory / "server.properties"

    # -- public lifecycle ------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        recorded = self._recorded()
        if recorded is None or not is_our_kafka(recorded["pid"], self._properties):
            return BrokerStatus(False, directory=self.directory)
        bootstrap, pid = str(recorded["bootstrap"]), int(str(recorded["pid"]))
        return BrokerStatus(True, bootstrap, pid, self.directory)

    def up(self) -> BrokerStatus:
        """Start the broker unless it runs; return once it answers metadata requests."""
        current = self.status()
        if current.running:
            return current
        started = time.monotonic()
        process = self.spawn()
        self.wait_ready(process)
        took = time.monotonic() - started
        return BrokerStatus(True, self.bootstrap, process.pid, self.directory, took)

    def spawn(self) -> subprocess.Popen[bytes]:
        """Configure, format (once) and start the node's process, without waiting for it (the
        nodes of a cluster are all started before any can answer: each needs a quorum)."""
        jars = ensure_jars(self.version, self.cache_dir)
        refuse_taken_port(self.port)
        refuse_taken_port(self.controller_port)
        if self.tls_port is not None:
            refuse_taken_port(self.tls_port)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_once(jars)
        process = self._spawn(jars)
        self._state_file.write_text(json.dumps({"pid": process.pid, "bootstrap": self.bootstrap}))
        return process

    def down(self) -> bool:
        """Stop the broker this directory started; False if none was running."""
        current = self.status()
        self._state_file.unlink(missing_ok=True)
        if not current.running or current.pid is None:
            return False
        terminate(current.pid)
        return True

    def kill(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the broker this directory started (no shutdown, no flush: a crash, for fault
        drills and `bench/recovery.py`); returns once it is gone. `up` starts it again on the
        same data and port."""
        current = self.status()
        if not current.running or current.pid is None:
            raise LocalKafkaError(f"no broker of {self.directory} is running to kill")
        os.kill(current.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while self.status().running:
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"the killed broker (pid {current.pid}) did not exit")
            time.sleep(0.05)
        child = CHILDREN.pop(current.pid, None)
        if child is not None:  # reaped, not left a zombie
            child.wait(timeout_s)

    # -- steps -----------------------------------------------------------------------------

    def _recorded(self) -> dict[str, object] | None:
        try:
            data = json.loads(self._state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None

    def _write_config(self) -> None:
        template = Template((INFRA_DIR / "server.properties.template").read_text())
        quorum = self.quorum
        text = template.substitute(
            port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.directory / "data",
            node_id=quorum.node_id,
            voters=quorum.voters or f"{quorum.node_id}@127.0.0.1:{self.controller_port}",
            replicas=quorum.replicas,
            min_isr=quorum.min_insync,
        )
        fd = os.open(self._properties, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:  # owner-only: with TLS it holds the broker's key
            out.write(text + self._tls_config() + self._secure_config())

    def _secure_config(self) -> str:
        """Properties that make the client listener SASL/SCRAM with ACLs (secure mode); with
        TLS too, the TLS listener is SASL_SSL (SCRAM over TLS: the production shape)."""
        if not self.secure:
            return ""
        user, password = self._admin()
        sasl = f"SASL_PLAINTEXT://127.0.0.1:{self.port}"
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";'
        )
        client = [sasl]
        protocols = "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
        over_tls: list[str] = []
        if self.tls_port is not None:
            client.append(f"SASL_SSL://127.0.0.1:{self.tls_port}")
            protocols += ",SASL_SSL:SASL_SSL"
            over_tls = [f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}"]
        return "\n".join(
            [
                "",
                "# The secure profile (mesh kafka up --secure): SASL/SCRAM clients, ACLs enforced.",
                f"listeners={','.join(client)},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={','.join(client)}",
                "inter.broker.listener.name=SASL_PLAINTEXT",
                f"listener.security.protocol.map={protocols}",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={jaas}",
                *over_tls,
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                # the controller listener is local and unauthenticated (ANONYMOUS)
                f"super.users=User:{user};User:ANONYMOUS",
                "allow.everyone.if.no.acl.found=false",
                "",
            ]
        )

    def _admin(self) -> tuple[str, str]:
        secret = self.directory / "secure" / "admin.json"
        if not secret.exists():
            secret.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"username": "mesh-admin", "password": secrets.token_urlsafe(24)}, out)
        return self.admin_credentials()

    def _tls_config(self) -> str:
        """Properties that add the TLS listener (later keys override the template's)."""
        if self.tls_port is None:
            return ""
        tls = ensure_broker_tls(self.directory / "tls")
        plain, ssl = f"PLAINTEXT://127.0.0.1:{self.port}", f"SSL://127.0.0.1:{self.tls_port}"
        listeners = (
            []  # secure: the TLS listener is SASL_SSL, set by _secure_config
            if self.secure
            else [
                f"listeners={plain},CONTROLLER://127.0.0.1:{self.controller_port},{ssl}",
                f"advertised.listeners={plain},{ssl}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL",
            ]
        )
        return "\n".join(
            [
                "",
                "# The TLS listener (mesh kafka up --tls); inter-broker traffic stays local.",
                *listeners,
                "ssl.keystore.type=PEM",
                f"ssl.keystore.key={_one_line(tls.key_pem)}",
                f"ssl.keystore.certificate.chain={_one_line(tls.chain_pem)}",
                "ssl.client.auth=none",
                "",
            ]
        )

    def _format_once(self, jars: Path) -> None:
        if (self.directory / "data" / "meta.properties").exists():
            return
        cluster_id = self.quorum.cluster_id or new_cluster_id()
        command = [
            "java", "-cp", classpath(jars), "kafka.tools.StorageTool", "format",
            "-t", cluster_id, "-c", str(self._properties), "--ignore-formatted",
        ]  # fmt: skip
        if self.secure:  # the admin's credential must exist before the broker talks to itself
            user, password = self._admin()
            command += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise LocalKafkaError(
                f"formatting the KRaft store in {self.directory / 'data'} failed: "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )

    def _spawn(self, jars: Path) -> subprocess.Popen[bytes]:
        command = [
            "java", "-Xms256m", f"-Xmx{self.heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={INFRA_DIR / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp", classpath(jars), "kafka.Kafka", str(self._properties),
        ]  # fmt: skip
        console = (self.directory / "console.log").open("ab")
        try:
            process = subprocess.Popen(  # noqa: S603
                command, stdout=console, stderr=subprocess.STDOUT, start_new_session=True
            )
        except FileNotFoundError:
            raise LocalKafkaError(
                "java was not found on PATH; install Java 17 or newer, or point the mesh at an "
                "existing cluster with MESH_BOOTSTRAP_SERVERS"
            ) from None
        finally:
            console.close()
        CHILDREN[process.pid] = process
        return process

    def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Return once the started node answers metadata requests; stop it and raise if it
        exits or does not answer within the bound."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._state_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    f"the broker exited with code {process.returncode} while starting; "
                    f"last lines of {self.directory / 'logs' / 'server.log'}:\n{self._log_tail()}"
                )
            if broker_count(self.bootstrap, self.admin_security()) > 0:
                return
            time.sleep(0.2)
        terminate(process.pid)
        self._state_file.unlink(missing_ok=True)
        raise LocalKafkaError(
            f"the broker did not answer on {self.bootstrap} within {_READY_TIMEOUT_S:.0f}s; "
            f"last log lines:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        lines: list[str] = []
        for name in ("logs/server.log", "console.log"):
            path = self.directory / name
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-15:]
        return "\n".join(lines)


def _one_line(pem: str) -> str:
    """A PEM block as one properties value (Java's Properties reads ``\\n`` as a newline)."""
    return pem.strip().replace("\n", "\\n")


def new_cluster_id() -> str:
    """A Kafka cluster id (base64url of a UUID), never starting with '-' (read as an option)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate
