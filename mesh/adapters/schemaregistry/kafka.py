"""The embedded schema registry: its log is the compacted, single-partition ``_mesh_schemas``.

How ids stay unique with any number of registry processes
---------------------------------------------------------
Every writer uses the same ``transactional.id``. Before it writes, a process must be *the*
writer: ``init_transactions()`` fences every earlier holder of that id (their in-flight
transaction is aborted and their next commit fails), and only then does it read the log to its
end with ``read_committed``. So a writer's view includes every id any earlier writer committed,
and a writer that was fenced in between cannot commit: it re-takes the role, re-reads and
plans again. Two processes may take turns, but no id is ever committed twice.

Taking turns could go on for ever: two processes registering at once fence each other in
lockstep (each ``init_transactions`` fences the other's commit). A fenced writer therefore
backs off for a random, growing pause before it takes the role again, so one of them gets a
whole read-plan-commit through while the other waits.

Readers never take the writer role, so a process that only decodes does not disturb the
registry server.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time

import orjson
from confluent_kafka import KafkaException, Producer, TopicPartition

from mesh.adapters.kafka.config import transactional_producer_config
from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.adapters.schemaregistry.core import (
    Entry,
    LevelEntry,
    RegisteredSchema,
    RegistryState,
    check_level,
    entry_from_json,
)
from mesh.adapters.schemaregistry.memory import lookup
from mesh.domain.topics import SCHEMAS
from mesh.errors import KafkaUnavailableError, RegistryFencedError
from mesh.settings import Cluster

__all__ = ["KafkaRegistry"]

_WRITE_ATTEMPTS = 8
_TIMEOUT_S = 15.0
_BACKOFF_S = 0.02  # the first pause after being fenced is up to this; it doubles per attempt


class KafkaRegistry:
    """A SchemaRegistry whose state is folded from ``_mesh_schemas``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.topic = cluster.topic(SCHEMAS)
        self.state = RegistryState()
        self._lock = threading.RLock()
        self._producer: Producer | None = None
        self._last_write_error = ""
        self._consumer = reader(cluster)
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._closed = False

    # -- the port --------------------------------------------------------------------------

    def register(self, subject: str, schema: str) -> RegisteredSchema:
        with self._lock:
            # A schema registered already is a lookup: no writer role (which would fence the
            # process that holds it, and needs the right to write the log).
            self.catch_up()
            known = self.state.plan(subject, schema)
            if isinstance(known, RegisteredSchema):
                return known
            for attempt in range(_WRITE_ATTEMPTS):
                self._become_writer()
                self.catch_up()
                planned = self.state.plan(subject, schema)
                if isinstance(planned, RegisteredSchema):
                    return planned
                if self._commit(planned):
                    return self.state.version(subject, planned.version)
                _back_off(attempt)
            raise RegistryFencedError(
                f"{subject!r} was not registered after {_WRITE_ATTEMPTS} attempts (last: "
                f"{self._last_write_error}); another registry process kept taking the writer "
                "role, or the broker refused the writes. Check the broker, then retry"
            )

    def schema_by_id(self, schema_id: int) -> str:
        with self._lock:
            if not self.state.has_id(schema_id):
                self.catch_up()
            return self.state.schema(schema_id)

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        with self._lock:
            self.catch_up()
            return lookup(self.state, subject, schema)

    def subjects(self) -> list[str]:
        with self._lock:
            self.catch_up()
            return self.state.subjects()

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            self.catch_up()
            return [v.version for v in self.state.versions(subject)]

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        with self._lock:
            self.catch_up()
            return self.state.version(subject, version)

    def get_level(self, subject: str | None = None) -> str:
        with self._lock:
            self.catch_up()
            return self.state.level(subject)

    def set_level(self, level: str, subject: str | None = None) -> str:
        entry = LevelEntry(subject, check_level(level))
        with self._lock:
            for attempt in range(_WRITE_ATTEMPTS):
                self._become_writer()
                if self._commit(entry):
                    return entry.level
                _back_off(attempt)
            raise RegistryFencedError(
                f"the level was not set after {_WRITE_ATTEMPTS} attempts ({self._last_write_error})"
            )

    def compatibility_problems(
        self, subject: str, schema: str, against: str | int = "all"
    ) -> list[str]:
        with self._lock:
            self.catch_up()
            return self.state.problems(subject, schema, against)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._consumer.close()
            if self._producer is not None:
                self._producer.flush(_TIMEOUT_S)

    # -- the log ---------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Fold every committed entry up to the log's end as of this call.

        An open transaction holds read_committed readers back until it ends, which the
        writer's short transaction timeout bounds.
        """
        read_to_end(
            self._consumer,
            [TopicPartition(self.topic, 0)],
            lambda message: self._fold(message.key(), message.value()),
            timeout_s=2 * _TIMEOUT_S,
        )

    def _fold(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return  # a tombstone: nothing to add (deletes are not part of the subset served)
        entry = entry_from_json(orjson.loads(key), orjson.loads(value))
        if entry is not None:
            self.state.apply(entry)

    def _become_writer(self) -> None:
        if self._producer is not None:
            return
        producer = Producer(
            transactional_producer_config(
                self.cluster,
                f"{self.topic}-writer",
                **{"linger.ms": 0, "transaction.timeout.ms": 10_000},
            )
        )
        try:
            producer.init_transactions(_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"could not take the registry writer role: {exc}") from exc
        self._producer = producer

    def _commit(self, entry: Entry) -> bool:
        """Write one entry in a transaction; False if it did not commit (fenced, or aborted).

        The caller then takes the writer role again, re-reads the log and plans afresh, so a
        retry can never reuse an id someone else committed meanwhile.
        """
        producer = self._producer
        if producer is None:  # fenced since _become_writer: take the role again
            return False
        try:
            producer.begin_transaction()
            producer.produce(self.topic, orjson.dumps(entry.value()), orjson.dumps(entry.key()))
            producer.commit_transaction(_TIMEOUT_S)
        except KafkaException as exc:
            self._producer = None
            self._last_write_error = str(exc)
            if exc.args[0].txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(_TIMEOUT_S)
            return False
        self.state.apply(entry)  # committed: fold it now; re-reading it later is a no-op
        return True


def _back_off(attempt: int) -> None:
    """A random pause, growing with ``attempt``, so fenced writers fall out of lockstep."""
    time.sleep(random.uniform(0, _BACKOFF_S * 2**attempt))  # noqa: S311 - jitter, not secrets
