"""Create the catalogue's topics; refuse when a live topic contradicts it.

``ensure_topics`` checks every existing topic first and creates nothing if any contradicts
the catalogue: a half-applied bootstrap on a misconfigured cluster is worse than none.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from mesh.adapters.kafka.config import base_config, refusal
from mesh.domain.topics import TopicSpec, catalogue, config_conflicts
from mesh.errors import KafkaUnavailableError, TopicConfigConflictError
from mesh.settings import Cluster

__all__ = ["EnsureReport", "TopicAdmin"]

_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class EnsureReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


class TopicAdmin:
    """Topic bootstrap against one cluster, for one topic prefix."""

    def __init__(self, cluster: Cluster) -> None:
        self.settings = cluster.settings
        self.bootstrap = cluster.bootstrap
        self._admin = AdminClient(base_config(cluster))

    def ensure(self, specs: Iterable[TopicSpec] | None = None) -> EnsureReport:
        """Create what is missing; raise TopicConfigConflictError naming every contradiction."""
        specs = list(catalogue() if specs is None else specs)
        live = self.topic_partitions()
        names = {spec.full_name(self.settings.topic_prefix): spec for spec in specs}
        present = [name for name in names if name in live]
        problems = self._conflicts({n: names[n] for n in present}, live)
        if problems:
            raise TopicConfigConflictError(
                "existing topics contradict the mesh's topic catalogue, so nothing was created:\n  "
                + "\n  ".join(problems)
                + "\nFix the topic configs (kafka-configs --alter) or recreate the topics, or use "
                "another MESH_TOPIC_PREFIX."
            )
        missing = [n for n in names if n not in live]
        raced = self._create([self._new_topic(n, names[n]) for n in missing])
        self._await_leaders(missing)
        self._refuse_raced({n: names[n] for n in raced})
        created = [n for n in missing if n not in raced]
        return EnsureReport(created=created, existing=present + raced)

    def _refuse_raced(self, raced: dict[str, TopicSpec]) -> None:
        """Check topics that appeared between listing and creating (another writer, or
        metadata that had not caught up with a fresh topic) exactly as existing ones."""
        if not raced:
            return
        problems = self._conflicts(raced, self.topic_partitions())
        if problems:
            raise TopicConfigConflictError(
                "topics created concurrently by someone else contradict the mesh's topic "
                "catalogue:\n  "
                + "\n  ".join(problems)
                + "\nFix the topic configs (kafka-configs --alter) or recreate the topics."
            )

    def topic_partitions(self) -> dict[str, int]:
        """Every topic of the cluster with its partition count."""
        try:
            metadata = self._admin.list_topics(timeout=_TIMEOUT_S)
        except KafkaException as exc:
            refused = refusal(self._admin)
            if refused is not None:
                raise KafkaUnavailableError(
                    f"the broker at {self.bootstrap} refused this client: {refused}. Check "
                    "MESH_SASL_USERNAME and MESH_SASL_PASSWORD (SASL) or MESH_SSL_CA_LOCATION "
                    "(TLS)"
                ) from exc
            raise KafkaUnavailableError(
                f"no Kafka broker answered at {self.bootstrap}: {exc}. Start one with "
                "`mesh kafka up` or set MESH_BOOTSTRAP_SERVERS"
            ) from exc
        return {name: len(t.partitions) for name, t in metadata.topics.items()}

    def topic_configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
        if not resources:
            return {}
        futures = self._admin.describe_configs(resources, request_timeout=_TIMEOUT_S)
        return {
            resource.name: {k: v.value for k, v in future.result().items()}
            for resource, future in futures.items()
        }

    def delete(self, names: list[str]) -> None:
        """Delete topics (tests and `mesh topics delete` only)."""
        if not names:
            return
        for future in self._admin.delete_topics(names, operation_timeout=_TIMEOUT_S).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise

    def _partitions_for(self, spec: TopicSpec) -> int:
        return spec.partitions or self.settings.partitions

    def _conflicts(self, present: dict[str, TopicSpec], live: dict[str, int]) -> list[str]:
        problems = []
        configs = self.topic_configs(list(present))
        for name, spec in present.items():
            problems += [f"{name}: {p}" for p in config_conflicts(spec, configs[name])]
            wanted = self._partitions_for(spec)
            if live[name] != wanted:
                problems.append(
                    f"{name}: has {live[name]} partitions but the catalogue requires {wanted} "
                    "(co-partitioned topics must agree)"
                )
        return problems

    def _new_topic(self, name: str, spec: TopicSpec) -> NewTopic:
        return NewTopic(
            name,
            num_partitions=self._partitions_for(spec),
            replication_factor=self.settings.replication_factor,
            config={"min.insync.replicas": str(self.settings.insync_replicas()), **spec.configs},
        )

    def _await_leaders(self, names: list[str]) -> None:
        """Return once every partition of ``names`` has a leader, so first use cannot fail."""
        deadline = time.monotonic() + _TIMEOUT_S
        pending = set(names)
        while pending and time.monotonic() < deadline:
            topics = self._admin.list_topics(timeout=_TIMEOUT_S).topics
            pending = {
                name
                for name in pending
                if name not in topics
                or not topics[name].partitions
                or any(p.leader < 0 for p in topics[name].partitions.values())
            }
            if pending:
                time.sleep(0.1)
        if pending:
            raise KafkaUnavailableError(f"topics created but without a leader: {sorted(pending)}")

    def _create(self, topics: list[NewTopic]) -> list[str]:
        """Create ``topics``; return the names that turned out to exist already."""
        if not topics:
            return []
        futures = self._admin.create_topics(topics, operation_timeout=_TIMEOUT_S)
        raced = []
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaUnavailableError(f"creating topics failed: {exc}") from exc
                raced.append(name)
        return raced
