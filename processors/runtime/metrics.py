"""What a running processor exposes: throughput, lag and restore progress."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["Metrics"]

_LAG_EVERY_S = 1.0


@dataclass
class Metrics:
    records_in: int = 0
    records_out: int = 0
    assignments: int = 0  # rebalances that gave this instance partitions, the first included
    refetched_records: int = 0  # handled, then discarded by a rebalance mid-batch
    restored_records: int = 0
    restore_seconds: float = 0.0
    restoring_now: int = 0
    max_lag: int = 0
    #: Records not yet processed per assigned (topic, partition), as last sampled (replaced
    #: whole, so a scrape from another thread sees one sample: :attr:`lag` is its sum).
    partition_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    max_commit_delay_ms: int = 0
    transactions: int = 0  # committed
    #: Per committed batch: ms from the oldest record's timestamp to its commit (end-to-end lag).
    commit_delays_ms: deque[int] = field(default_factory=lambda: deque(maxlen=100_000))
    started: float = field(default_factory=time.monotonic)
    _window: list[tuple[float, int]] = field(default_factory=list)
    _next_lag: float = 0.0

    def count(self, records_in: int, records_out: int) -> None:
        self.records_in += records_in
        self.records_out += records_out

    def committed(self, oldest_timestamp_ms: int | None, now_ms: int) -> None:
        self.transactions += 1
        if oldest_timestamp_ms is None:
            return
        delay = max(0, now_ms - oldest_timestamp_ms)
        self.commit_delays_ms.append(delay)
        self.max_commit_delay_ms = max(self.max_commit_delay_ms, delay)

    def restoring(self, records: int) -> None:
        self.restoring_now += records

    def discarded(self, records: int) -> None:
        self.refetched_records += records

    def restored(self, records: int, seconds: float) -> None:
        self.assignments += 1
        self.restored_records += records
        self.restore_seconds += seconds
        self.restoring_now = 0

    def sample_lag(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        """Records not yet processed on the assigned partitions (sampled once a second)."""
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + _LAG_EVERY_S
        self._window = [*self._window[-59:], (now, self.records_in)]
        try:
            positions = consumer.position(assigned) if assigned else []
            lags = {}
            for tp in positions:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    lags[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        except KafkaException:
            return
        self.partition_lag = lags
        self.max_lag = max(self.max_lag, sum(lags.values()))

    @property
    def lag(self) -> int:
        """Records not yet processed on the assigned partitions, as last sampled."""
        return sum(self.partition_lag.values())

    def records_per_second(self) -> float:
        if len(self._window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._window[0], self._window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "records_out": self.records_out,
            "records_per_s": round(self.records_per_second(), 1),
            "lag": self.lag,
            "max_commit_delay_ms": self.max_commit_delay_ms,
            "max_lag": self.max_lag,
            "assignments": self.assignments,
            "refetched_records": self.refetched_records,
            "restored_records": self.restored_records,
            "restore_seconds": round(self.restore_seconds, 3),
            "restoring_now": self.restoring_now,
        }
