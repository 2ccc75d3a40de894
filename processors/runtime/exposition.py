"""The processors' Prometheus metrics (``mesh processors run --metrics-port``), per processor:
records in and out, committed transactions, lag in records (in all and per input partition),
the slowest commit's end-to-end delay, restores (records, seconds, assignments), records
handled twice across a rebalance, and restarts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mesh.adapters.metrics import Family
from processors.runtime.engine import Engine

__all__ = ["processor_families"]


def processor_families(engines: Sequence[Engine], restarts: Mapping[str, int]) -> list[Family]:
    def family(name: str, kind: str, help: str, value: Callable[[Engine], float]) -> Family:
        samples: list[tuple[tuple[str, ...], float]] = [
            ((e.job.name,), float(value(e))) for e in engines
        ]
        return Family(name, kind, help, ("processor",), samples)

    dead = Family(
        "mesh_processor_dead_letters", "counter", "Records dead-lettered, by reason.",
        ("processor", "reason"),
        [((e.job.name, reason), float(n))
         for e in engines for reason, n in sorted(e.job.dead_letters_by_reason.items())],
    )  # fmt: skip
    lags = {e.job.name: e.metrics.partition_lag for e in engines}  # one sample for both
    by_partition = Family(
        "mesh_processor_partition_lag_records", "gauge", "Records not yet handled, per "
        "assigned input partition.", ("processor", "topic", "partition"),
        [((name, topic, str(partition)), float(n))
         for name, lag in lags.items() for (topic, partition), n in sorted(lag.items())],
    )  # fmt: skip
    return [
        dead,
        by_partition,
        family("mesh_processor_records_in", "counter", "Input records handled.",
               lambda e: e.metrics.records_in),
        family("mesh_processor_records_out", "counter", "Records produced (state included).",
               lambda e: e.metrics.records_out),
        family("mesh_processor_transactions", "counter", "Transactions committed.",
               lambda e: e.metrics.transactions),
        family("mesh_processor_lag_records", "gauge", "Records not yet handled on the "
               "assigned partitions.", lambda e: sum(lags[e.job.name].values())),
        family("mesh_processor_max_commit_delay_seconds", "gauge", "Slowest record "
               "timestamp to its transaction committing, so far.",
               lambda e: e.metrics.max_commit_delay_ms / 1000),
        family("mesh_processor_restored_records", "counter", "Records read back to restore "
               "state.", lambda e: e.metrics.restored_records),
        family("mesh_processor_restore_seconds", "counter", "Seconds spent restoring.",
               lambda e: e.metrics.restore_seconds),
        family("mesh_processor_assignments", "counter", "Rebalances that gave partitions.",
               lambda e: e.metrics.assignments),
        family("mesh_processor_refetched_records", "counter", "Records handled, then "
               "discarded by a rebalance mid-batch.", lambda e: e.metrics.refetched_records),
        family("mesh_processor_restarts", "counter", "Restarts after a retriable failure.",
               lambda e: restarts.get(e.job.name, 0)),
        family("mesh_processor_ready", "gauge", "1 while assigned and restored.",
               lambda e: 1 if e.ready else 0),
    ]  # fmt: skip
