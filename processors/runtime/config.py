"""How an engine runs: its instance, batching, and the bounds on its waits."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    instance: str = "0"
    commit_interval_ms: int = 20
    max_batch: int = 500
    poll_timeout_s: float = 0.01
    transaction_timeout_ms: int = 30_000
    #: Static group membership (KIP-345): the instance rejoins under ``group.instance.id``
    #: ``<group>-<instance>`` and gets its partitions back at once, instead of waiting for the
    #: killed member's session to time out (40 s by default). The session timeout is how long
    #: a member that does not come back keeps its partitions.
    static_membership: bool = True
    session_timeout_ms: int = 6_000
    #: Bounds on finishing a transaction (adding the offsets, committing): each call's own
    #: timeout, and how long the engine waits for both before it replaces the producer.
    call_timeout_s: float = 8.0
    finish_timeout_s: float = 10.0
