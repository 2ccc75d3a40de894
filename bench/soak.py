"""Soak: the demo fleet plus a steady synthetic load for ``BENCH_SOAK_MINUTES`` (default 10).

What runs, all on one broker (``MESH_BOOTSTRAP_SERVERS`` or a local one started here) under a
fresh state directory and topic prefix: the stack as `mesh up` starts it (the processors with
the demo's kill-switch policy, the registry API), the demo fleet again and again (one round
every ``ROUND_EVERY_S``: twelve tasks, escalations, a runaway chain halted), and a pair of
agents exchanging ``SYNTHETIC_RATE`` messages a second the whole time.

Sampled every ``SAMPLE_EVERY_S``: the lag of every consumer group of the prefix (records
written and not yet committed by the group: external, from the broker, not the processors'
own word), the resident memory of every process (this one, which hosts the sidecars; the
processors; the registry API; the broker) and the dead-letter topic's record count.

Pass criteria (each reported with its figures; the run exits 1 if one fails):

1. **Lag bounded.** Every sampled lag stays under ``LAG_BOUND`` records, and ``DRAIN_S`` after
   the load stops every group is within ``SETTLED_LAG`` records of the end. Lag counts
   records, not offsets: the offsets a transaction's commit marker takes are not lag.
2. **No memory growth trend.** For each mesh process, the least-squares slope of its RSS over
   the second half of the run (the first half is warm-up: caches and windows filling),
   projected over a full run, is under ``GROWTH_BOUND`` of its median RSS or 16 MiB, whichever
   is larger. The broker's JVM is sampled and reported, not judged (its heap is capped by
   ``-Xmx``; the JVM keeps what it has grown into).
3. **No unexpected dead letters.** Every dead letter's reason is one the demo provokes on
   purpose (``EXPECTED_DEAD_LETTERS``, each explained there); any other reason fails the run.

Writes ``results/soak.json`` (every sample too) and ``results/soak.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MINUTES = float(os.environ.get("BENCH_SOAK_MINUTES", "10"))
ROUND_EVERY_S = 30.0
SYNTHETIC_RATE = 20.0  # messages a second, load-source -> load-sink
SAMPLE_EVERY_S = 5.0
DRAIN_S = 30.0
LAG_BOUND = 5_000
SETTLED_LAG = 10
GROWTH_BOUND = 0.10
#: Dead letters the demo provokes on purpose. (Empty: the demo's refusals go to telemetry on
#: the sending side; nothing it does is refused on receipt.)
EXPECTED_DEAD_LETTERS: dict[str, str] = {}


def _isolate() -> Path:
    """A fresh state directory and topic prefix, set in this process's environment so that
    the services `mesh up` starts (child processes) see the same."""
    state = Path(tempfile.mkdtemp(prefix="mesh-soak-"))
    os.environ["MESH_STATE_DIR"] = str(state)
    os.environ["MESH_TOPIC_PREFIX"] = f"soak.{uuid.uuid4().hex[:8]}."
    if not os.environ.get("MESH_BOOTSTRAP_SERVERS"):
        from tests.conftest import free_port_pair

        os.environ["MESH_KAFKA_PORT"] = str(free_port_pair())
    return state


STATE_DIR = _isolate()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from bench._report import RESULTS, median, write_results  # noqa: E402
from demo.fleet import KILLSWITCH_POLICY, put_policies, run_fleet  # noqa: E402
from mesh.adapters.kafka.config import base_config  # noqa: E402
from mesh.adapters.kafka.reading import read_range, read_to_end, reader, watermarks  # noqa: E402
from mesh.adapters.localkafka import local_kafka  # noqa: E402
from mesh.adapters.schemaregistry.factory import open_registry  # noqa: E402
from mesh.adapters.serde.codec import Serde  # noqa: E402
from mesh.domain.topics import DLQ  # noqa: E402
from mesh.errors import MeshError  # noqa: E402
from mesh.settings import Cluster, Settings, load_settings  # noqa: E402
from sidecar.core import Sidecar  # noqa: E402
from sidecar.spec import AgentSpec  # noqa: E402
from stack.supervisor import down as stack_down  # noqa: E402
from stack.supervisor import up as stack_up  # noqa: E402
from tests.conftest import free_port_pair  # noqa: E402


@dataclass
class Samples:
    at: list[float] = field(default_factory=list)
    lag: dict[str, list[int]] = field(default_factory=dict)  # group -> records behind
    rss_mib: dict[str, list[float]] = field(default_factory=dict)  # process -> MiB
    dead_letters: list[int] = field(default_factory=list)


@dataclass
class Load:
    synthetic_sent: int = 0
    synthetic_received: int = 0
    send_failures: int = 0
    rounds: int = 0
    tasks_completed: int = 0
    tasks_opened: int = 0
    halts: int = 0


# -- sampling -------------------------------------------------------------------------------


def group_lags(cluster: Cluster, admin: AdminClient, probe: Any) -> dict[str, int]:
    """Records behind, per consumer group of this prefix (committed offsets vs the ends)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    prefix = cluster.prefix
    listed = admin.list_consumer_groups(request_timeout=10).result()
    groups = sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix))
    lags: dict[str, int] = {}
    for group in groups:
        request = [ConsumerGroupTopicPartitions(group)]
        result = admin.list_consumer_group_offsets(request)[group].result()
        behind = 0
        for tp in result.topic_partitions:
            if tp.offset < 0:
                continue
            _, high = watermarks(probe, TopicPartition(tp.topic, tp.partition))
            if high > tp.offset:  # records, not offsets: a commit marker is not lag
                behind += sum(1 for _ in read_range(probe, tp, tp.offset, high))
        lags[group.removeprefix(prefix)] = behind
    return lags


def processes(settings: Settings) -> dict[str, int]:
    """name -> pid of every process to watch: this one, the services `mesh up` started (the
    keeper's child: the service itself), the local broker."""
    found = {"bench (sidecars, demo fleet)": os.getpid()}
    run = settings.state_dir / "run"
    for name in ("processors", "registry-api"):
        try:
            keeper = int((run / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        children = _children(keeper)
        found[name] = children[0] if children else keeper
    if not settings.bootstrap_servers:
        broker = local_kafka(settings).status()
        if broker.pid:
            found["kafka broker (JVM)"] = broker.pid
    return found


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in task.read_text().split()]
    return found


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def dead_letter_count(cluster: Cluster, probe: Any) -> int:
    metadata = probe.list_topics(cluster.topic(DLQ), timeout=10).topics[cluster.topic(DLQ)]
    return sum(
        watermarks(probe, TopicPartition(cluster.topic(DLQ), p))[1] for p in metadata.partitions
    )


def dead_letter_reasons(cluster: Cluster, serde: Serde) -> Counter[str]:
    consumer = reader(cluster)
    reasons: Counter[str] = Counter()
    try:
        topic = cluster.topic(DLQ)
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p, 0) for p in parts]
        consumer.assign(tps)

        def fold(message: Any) -> None:
            record = serde.decode(message.value()).record
            reasons[str(record.get("reason"))] += 1

        read_to_end(consumer, tps, fold)
    finally:
        consumer.close()
    return reasons


async def sample_forever(
    cluster: Cluster, samples: Samples, started: float, stop: asyncio.Event
) -> None:
    admin = AdminClient(base_config(cluster))
    probe = reader(cluster)
    try:
        while not stop.is_set():
            lags = await asyncio.to_thread(group_lags, cluster, admin, probe)
            count = await asyncio.to_thread(dead_letter_count, cluster, probe)
            samples.at.append(time.monotonic() - started)
            n = len(samples.at)
            for group, behind in lags.items():
                samples.lag.setdefault(group, [0] * (n - 1)).append(behind)
            for series in samples.lag.values():
                series += [0] * (n - len(series))
            for name, pid in processes(cluster.settings).items():
                samples.rss_mib.setdefault(name, [float("nan")] * (n - 1)).append(
                    rss_mib(pid) or float("nan")
                )
            for rss_series in samples.rss_mib.values():
                rss_series += [float("nan")] * (n - len(rss_series))
            samples.dead_letters.append(count)
            worst = max(lags.values(), default=0)
            print(
                f"{samples.at[-1]:6.0f}s  max lag {worst:5d}  dead letters {count:4d}  "
                + "  ".join(f"{k.split()[0]} {v[-1]:.0f} MiB" for k, v in samples.rss_mib.items())
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
    finally:
        probe.close()


# -- load -----------------------------------------------------------------------------------


async def demo_rounds(cluster: Cluster, serde: Serde, load: Load, until: float) -> None:
    while time.monotonic() < until:
        began = time.monotonic()
        report = await run_fleet(cluster, serde, lambda _line: None, tasks=12)
        load.rounds += 1
        load.tasks_opened += report.tasks
        load.tasks_completed += len(report.completed)
        load.halts += report.halt is not None
        await asyncio.sleep(max(0.0, ROUND_EVERY_S - (time.monotonic() - began)))


async def synthetic(cluster: Cluster, serde: Serde, load: Load, until: float) -> None:
    source = Sidecar(cluster, serde, AgentSpec("load-source", ("load",)), heartbeat_s=2.0)
    sink = Sidecar(cluster, serde, AgentSpec("load-sink", ("sink",)), heartbeat_s=2.0)
    await asyncio.gather(source.start(), sink.start())

    async def drain() -> None:
        while True:
            if await sink.receive(timeout_s=1.0) is not None:
                load.synthetic_received += 1

    draining = asyncio.create_task(drain())
    try:
        while "load-sink" not in source.agents():  # noqa: ASYNC110 - the follower fills it
            await asyncio.sleep(0.1)
        next_at = time.monotonic()
        while time.monotonic() < until:
            try:
                await source.send("load-sink", data={"n": load.synthetic_sent})
                load.synthetic_sent += 1
            except MeshError as exc:
                load.send_failures += 1
                print(f"synthetic send refused: {exc}")
            next_at += 1 / SYNTHETIC_RATE
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.sleep(5)  # the last ones arrive
    finally:
        draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)
        await asyncio.gather(source.stop(), sink.stop())


# -- judging --------------------------------------------------------------------------------


def slope_per_s(xs: list[float], ys: list[float]) -> float:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y == y]  # drop NaN
    if len(pairs) < 3:
        return 0.0
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    var = sum((x - mx) ** 2 for x, _ in pairs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in pairs) / var


def judge(samples: Samples, settled: dict[str, int], reasons: Counter[str]) -> dict[str, Any]:
    run_s = samples.at[-1] if samples.at else 0.0
    half = [i for i, at in enumerate(samples.at) if at >= run_s / 2]
    worst_lag = max((max(v) for v in samples.lag.values()), default=0)
    lag_ok = worst_lag < LAG_BOUND and all(v <= SETTLED_LAG for v in settled.values())
    memory: dict[str, dict[str, float]] = {}
    memory_ok = True
    for name, series in samples.rss_mib.items():
        xs = [samples.at[i] for i in half]
        ys = [series[i] for i in half]
        grown = slope_per_s(xs, ys) * run_s
        typical = median([y for y in series if y == y] or [0.0])
        bound = max(16.0, GROWTH_BOUND * typical)
        judged = "JVM" not in name
        memory[name] = {
            "median_mib": round(typical, 1),
            "trend_mib_per_run": round(grown, 1),
            "bound_mib": round(bound, 1),
        }
        if judged and grown >= bound:
            memory_ok = False
    unexpected = {r: n for r, n in reasons.items() if r not in EXPECTED_DEAD_LETTERS}
    return {
        "lag_bounded": lag_ok,
        "worst_lag": worst_lag,
        "settled_lag": settled,
        "no_memory_growth": memory_ok,
        "memory": memory,
        "no_unexpected_dead_letters": not unexpected,
        "dead_letter_reasons": dict(reasons),
    }


def plot(samples: Samples, path: Path) -> None:
    minutes = [at / 60 for at in samples.at]
    fig, (lag_ax, rss_ax, dlq_ax) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for group, series in sorted(samples.lag.items()):
        lag_ax.plot(minutes, series, label=group)
    lag_ax.set_ylabel("consumer lag (records)")
    lag_ax.legend(fontsize=7, ncol=2)
    for name, rss_series in sorted(samples.rss_mib.items()):
        rss_ax.plot(minutes, rss_series, label=name)
    rss_ax.set_ylabel("RSS (MiB)")
    rss_ax.legend(fontsize=7)
    dlq_ax.plot(minutes, samples.dead_letters)
    dlq_ax.set_ylabel("dead letters (total)")
    dlq_ax.set_xlabel("minutes")
    fig.suptitle("mesh soak: demo fleet + synthetic load")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# -- main -----------------------------------------------------------------------------------


async def soak(cluster: Cluster, serde: Serde) -> tuple[Samples, Load, dict[str, int]]:
    samples, load, stop = Samples(), Load(), asyncio.Event()
    print(await asyncio.to_thread(put_policies, cluster, serde))  # before any agent sends
    started = time.monotonic()
    until = started + MINUTES * 60
    sampler = asyncio.create_task(sample_forever(cluster, samples, started, stop))
    try:
        await asyncio.gather(
            demo_rounds(cluster, serde, load, until), synthetic(cluster, serde, load, until)
        )
        await asyncio.sleep(DRAIN_S)
    finally:
        stop.set()
        await sampler
    admin = AdminClient(base_config(cluster))
    probe = reader(cluster)
    try:
        settled = await asyncio.to_thread(group_lags, cluster, admin, probe)
    finally:
        probe.close()
    return samples, load, settled


def main() -> int:
    # SIGTERM (a timeout, a Ctrl-C from a supervisor) ends the run through the finally below,
    # which stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = load_settings()
    where = stack_up(settings, print, free_port_pair(), KILLSWITCH_POLICY)
    registry = open_registry(settings, where)
    try:
        samples, load, settled = asyncio.run(soak(where, Serde(registry)))
        reasons = dead_letter_reasons(where, Serde(registry))
    finally:
        registry.close()
        stack_down(settings, print)
        if not settings.bootstrap_servers:
            local_kafka(settings).down()
    verdict = judge(samples, settled, reasons)
    RESULTS.mkdir(exist_ok=True)
    plot(samples, RESULTS / "soak.png")
    run_s = samples.at[-1] if samples.at else 0.0
    figures: dict[str, Any] = {
        "minutes of load": MINUTES,
        "demo rounds": load.rounds,
        "demo tasks completed / opened": f"{load.tasks_completed} / {load.tasks_opened}",
        "runaway chains halted": load.halts,
        "synthetic messages sent": load.synthetic_sent,
        "synthetic messages received": load.synthetic_received,
        "synthetic sends refused": load.send_failures,
        "worst consumer lag (records)": verdict["worst_lag"],
        "largest lag after the drain (records)": max(settled.values(), default=0),
        "dead letters": sum(reasons.values()),
        "PASS lag bounded": verdict["lag_bounded"],
        "PASS no memory growth trend": verdict["no_memory_growth"],
        "PASS no unexpected dead letters": verdict["no_unexpected_dead_letters"],
    }
    for name, memory in verdict["memory"].items():
        figures[f"RSS {name} (median MiB; trend over the run)"] = (
            f"{memory['median_mib']:.0f}; {memory['trend_mib_per_run']:+.1f}"
        )
    ratios = {
        "synthetic received / sent": load.synthetic_received / max(1, load.synthetic_sent),
        "demo tasks completed / opened": load.tasks_completed / max(1, load.tasks_opened),
    }
    write_results(
        "soak",
        figures,
        ratios,
        f"{run_s / 60:.1f} min sampled every {SAMPLE_EVERY_S:g} s; the demo fleet every "
        f"{ROUND_EVERY_S:g} s plus {SYNTHETIC_RATE:g} msg/s of synthetic load; criteria in "
        "bench/soak.py; plot in results/soak.png.",
        extra={"verdict": verdict, "samples": _no_nan(samples.__dict__)},
    )
    for key in ("lag_bounded", "no_memory_growth", "no_unexpected_dead_letters"):
        print(f"{key}: {'PASS' if verdict[key] else 'FAIL'}")
    print(f"wrote {RESULTS / 'soak.json'} and {RESULTS / 'soak.png'}")
    return (
        0
        if all(
            verdict[k] for k in ("lag_bounded", "no_memory_growth", "no_unexpected_dead_letters")
        )
        else 1
    )


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: a sample with no process to measure is null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
