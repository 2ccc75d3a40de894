"""The key directory (``mesh.keys.v1``) folded as every reader folds it
(:class:`~mesh.domain.keys.KeyDirectory`): only statements signed by the mesh's key count, a
replayed older one changes nothing, and what is ignored is kept in ``ignored`` with where it
was and why. ``catch_up`` reads to the end; ``poll`` folds what has arrived without waiting
(the processor runtime's global table of keys)."""

from __future__ import annotations

from confluent_kafka import Message

from mesh.adapters.kafka.table import TopicFold
from mesh.adapters.serde.codec import Serde
from mesh.domain.keys import KEY_STATEMENT_SUBJECT, KeyDirectory, KeyStatement
from mesh.domain.topics import KEYS
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["KeyTable", "fold_statement", "read_keys"]


def fold_statement(directory: KeyDirectory, serde: Serde, value: bytes | None) -> str | None:
    """Fold one record of ``mesh.keys.v1``; returns why it changed nothing (None: applied)."""
    if value is None:
        return "a tombstone changes nothing"
    try:
        decoded = serde.decode(value)
        if decoded.subject != KEY_STATEMENT_SUBJECT:
            return f"a {decoded.subject} record is not a key statement"
        statement = KeyStatement.from_record(decoded.record)
    except (MeshError, KeyError, TypeError, ValueError) as exc:
        return f"not a key statement ({exc})"
    return directory.apply(statement)


class KeyTable(TopicFold):
    def __init__(self, cluster: Cluster, serde: Serde, mesh_public: bytes) -> None:
        self.directory = KeyDirectory(mesh_public)
        self.ignored: list[str] = []
        self._serde = serde
        super().__init__(cluster, cluster.topic(KEYS))

    def _fold(self, message: Message) -> None:
        ignored = fold_statement(self.directory, self._serde, message.value())
        if ignored is not None:
            where = f"{self.topic}[{message.partition()}]@{message.offset()}"
            self.ignored.append(f"{where}: {ignored}")


def read_keys(cluster: Cluster, serde: Serde, mesh_public: bytes) -> KeyDirectory:
    """The key directory read to the end of ``mesh.keys.v1``."""
    return KeyTable(cluster, serde, mesh_public).read_once().directory
