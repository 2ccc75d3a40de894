"""A local KRaft cluster of N nodes from the same jars (``mesh kafka up --brokers 3``).

Each node is broker and controller at once (a combined node, like the single broker), so
three nodes make a quorum that survives the loss of any one. Node ``i`` (1-based) lives in
``<dir>/node-i`` and listens on ``port + 3*(i-1)``, its controller one port above; the
cluster's id and size are recorded in ``<dir>/cluster.json`` so that ``status``, ``down`` and
a restart find the same nodes with the same data.

Internal topics (consumer offsets, transaction state) get three replicas and
``min.insync.replicas=2`` on the nodes; the mesh's own topics get the same when
``MESH_REPLICATION_FACTOR=3`` (see :meth:`mesh.settings.Settings.insync_replicas`), so a
write is acknowledged only once two nodes have it and one node can die without losing it.

Why not three single brokers: a node's readiness needs a quorum of controllers, so every
node is spawned before any is waited for (:meth:`LocalKafka.spawn`, :meth:`wait_ready`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from mesh.adapters.localkafka.broker import BrokerStatus, LocalKafka, Quorum, new_cluster_id
from mesh.adapters.localkafka.process import broker_count
from mesh.errors import LocalKafkaError

__all__ = ["PORTS_PER_NODE", "ClusterStatus", "LocalCluster", "recorded_cluster"]

#: Ports each node takes from the base port on: client, controller, and one kept free.
PORTS_PER_NODE = 3
_READY_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    nodes: list[BrokerStatus]
    bootstrap: str
    started_in_s: float | None = None

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)


class LocalCluster:
    """``size`` local KRaft nodes owned by one directory."""

    def __init__(
        self,
        directory: Path,
        port: int,
        size: int,
        *,
        version: str,
        heap: str = "1g",
        cache_dir: Path | None = None,
    ) -> None:
        if size < 1:
            raise LocalKafkaError(f"a cluster needs at least one node, not {size}")
        self.directory = directory
        self.port = port
        self.size = size
        cluster_id = self._recorded_id()
        voters = ",".join(f"{i}@127.0.0.1:{self._port_of(i) + 1}" for i in range(1, size + 1))
        self.nodes = [
            LocalKafka(
                directory / f"node-{i}",
                self._port_of(i),
                version=version,
                heap=heap,
                cache_dir=cache_dir,
                quorum=Quorum(i, voters, cluster_id, replicas=min(size, 3)),
            )
            for i in range(1, size + 1)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        """Node ``node_id`` (1-based, as Kafka numbers them)."""
        if not 1 <= node_id <= self.size:
            raise LocalKafkaError(f"no node {node_id}: the cluster has nodes 1..{self.size}")
        return self.nodes[node_id - 1]

    def status(self) -> ClusterStatus:
        return ClusterStatus([node.status() for node in self.nodes], self.bootstrap)

    def up(self) -> ClusterStatus:
        """Start every node that is not running; return once all answer and see each other."""
        started = time.monotonic()
        spawned = [(node, node.spawn()) for node in self.nodes if not node.status().running]
        if not spawned:
            return self.status()
        try:
            for node, process in spawned:
                node.wait_ready(process)
            self._wait_for_all_brokers()
        except LocalKafkaError:
            self.down()
            raise
        status = self.status()
        return ClusterStatus(status.nodes, status.bootstrap, time.monotonic() - started)

    def down(self) -> int:
        """Stop every node this directory started; returns how many were running."""
        return sum(node.down() for node in self.nodes)

    def _port_of(self, node_id: int) -> int:
        return self.port + PORTS_PER_NODE * (node_id - 1)

    def _recorded_id(self) -> str:
        """The cluster id every node is formatted with, made once and kept with the size."""
        record = self.directory / "cluster.json"
        if record.exists():
            data = json.loads(record.read_text())
            if data.get("size") != self.size or data.get("port") != self.port:
                raise LocalKafkaError(
                    f"{self.directory} holds a cluster of {data.get('size')} nodes on port "
                    f"{data.get('port')}; stop it with `mesh kafka down` and start it with the "
                    "same --brokers and --port, or use another --data-dir"
                )
            return str(data["cluster_id"])
        self.directory.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        record.write_text(
            json.dumps({"cluster_id": cluster_id, "size": self.size, "port": self.port})
        )
        return cluster_id

    def _wait_for_all_brokers(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while broker_count(self.bootstrap) != self.size:
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"the {self.size} nodes did not all join the cluster within "
                    f"{_READY_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.2)


def recorded_cluster(directory: Path) -> tuple[int, int] | None:
    """(size, port) of the cluster recorded in ``directory``, or None if there is none."""
    record = directory / "cluster.json"
    try:
        data = json.loads(record.read_text())
        return int(data["size"]), int(data["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
