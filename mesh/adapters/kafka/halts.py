"""The control topic folded into the halts in force, as every reader folds it.

Records are folded in log order through :class:`~mesh.domain.control.HaltBook` (ordered
control); only commands signed by one of ``signers`` count, and what changes nothing
(unsigned, forged, a tombstone, a stale command) is kept in ``ignored`` with where it was and
why; ``issued_at`` keeps when each halt in force was produced (the console's time to halt).
``catch_up`` reads to the end; ``poll`` folds what has arrived without waiting (the
processor runtime's global table of halts).
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Message

from mesh.adapters.kafka.table import TopicFold
from mesh.adapters.serde.control import open_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import HaltBook
from mesh.domain.topics import CONTROL
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["HaltTable"]


class HaltTable(TopicFold):
    def __init__(self, cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]) -> None:
        self.book = HaltBook()
        self.ignored: list[str] = []
        self.issued_at: dict[str, int] = {}  # command id -> when its signer produced it
        self._codec, self._signers = codec, dict(signers)
        super().__init__(cluster, cluster.topic(CONTROL))

    @property
    def halts(self) -> dict[str, dict[str, object]]:
        return self.book.halts

    def _fold(self, message: Message) -> None:
        key, value = (message.key() or b"").decode(), message.value()
        where = f"{self.topic}[{message.partition()}]@{message.offset()}"
        if value is None:
            self.ignored.append(f"{where}: a tombstone changes nothing")
            return
        try:
            opened = open_control(self._codec, value, self._signers)
        except MeshError as exc:
            self.ignored.append(f"{where}: {exc}")
            return
        outcome = self.book.apply(key, opened.body, opened.envelope.sender)
        if outcome.changed and opened.body.get("action") == "HALT":
            self.issued_at[str(opened.body["command_id"])] = opened.envelope.created_at_ms
        if outcome.lifted is not None:
            self.issued_at.pop(str(outcome.lifted.get("command_id")), None)
        stale = outcome.stale
        if stale is not None:
            self.ignored.append(f"{where}: {stale}")
