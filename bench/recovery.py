"""Recovery: how long the kill-switch is gone after a crash (issue 14).

Two faults, each over ``BENCH_TRIALS`` trials (default 10), on a broker of the bench's own
(started from the jars; a broker restart needs one it can kill):

1. **Processor kill.** `mesh processors run killswitch` is killed with SIGKILL and started
   again at once. Measured from the kill: the new process's ``ready:`` line (assigned and
   restored), and the kill-switch *answering*: a telemetry record produced right after the kill
   is committed by the kill-switch's group. Interleaved, in the same run: static group
   membership (the default) against dynamic membership (what a plain consumer group does: the
   killed member's partitions wait out its session, here 6 s; the client default is 45 s).
2. **Broker kill.** The broker is killed with SIGKILL while the kill-switch runs, and started
   again 2 s later on the same data. Measured from the moment the broker answers again: a
   telemetry record produced then is committed by the kill-switch (it carried on by itself).

Reported: median and worst of each, and the ratio static/dynamic of the median answer time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bench._report import median, write_results
from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.kafka.config import consumer_config, producer_config
from mesh.adapters.keyfiles import control_signers
from mesh.adapters.localkafka.broker import LocalKafka
from mesh.adapters.schemaregistry.kafka import KafkaRegistry
from mesh.adapters.serde.codec import Serde
from mesh.domain.topics import TELEMETRY
from mesh.settings import Cluster, Settings, load_settings
from tests.conftest import free_port_pair

TRIALS = int(os.environ.get("BENCH_TRIALS", "10"))
ROOT = Path(__file__).resolve().parents[1]


class Processor:
    """`mesh processors run killswitch` in a child process; its lines read as they come."""

    def __init__(self, settings: Settings, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env |= {
            "MESH_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
            "MESH_TOPIC_PREFIX": settings.topic_prefix,
            "MESH_STATE_DIR": str(settings.state_dir),
            "MESH_PARTITIONS": str(settings.partitions),
        }
        argv = [sys.executable, "-m", "cli", "processors", "run", "killswitch", *extra]
        self.process = subprocess.Popen(  # noqa: S603
            argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.ready_at: float | None = None
        self.tail: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tail = [*self.tail[-20:], line.rstrip()]
            if self.ready_at is None and "ready:" in line:
                self.ready_at = time.monotonic()

    def wait_ready(self, timeout_s: float = 120) -> float:
        deadline = time.monotonic() + timeout_s
        while self.ready_at is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the kill-switch did not start:\n" + "\n".join(self.tail))
            time.sleep(0.01)
        return self.ready_at

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


class Probe:
    """A record on telemetry partition 0, and whether the kill-switch has committed past it."""

    def __init__(self, settings: Settings) -> None:
        cluster = Cluster.of(settings)
        self.topic = cluster.topic(TELEMETRY)
        self.producer = Producer(producer_config(cluster, **{"linger.ms": 0}))
        group = f"{settings.topic_prefix}mesh-killswitch"
        self.watcher = Consumer(consumer_config(cluster, group))

    def send(self) -> int:
        offsets: list[int] = []
        self.producer.produce(
            self.topic,
            b"\x00probe",
            b"probe",
            partition=0,
            on_delivery=lambda err, msg: offsets.append(-1 if err else int(msg.offset() or 0)),
        )
        self.producer.flush(60)
        return offsets[0]

    def answered_after(self, offset: int, since: float, timeout_s: float = 120) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(KafkaException):  # the broker may still be coming back
                [tp] = self.watcher.committed([TopicPartition(self.topic, 0)], timeout=5)
                if tp.offset > offset:
                    return time.monotonic() - since
            time.sleep(0.02)
        raise RuntimeError(f"the kill-switch did not commit past offset {offset}")

    def close(self) -> None:
        self.watcher.close()


def processor_trial(settings: Settings, probe: Probe, mode: str) -> tuple[float, float]:
    extra = ["--dynamic-membership"] if mode == "dynamic" else []
    first = Processor(settings, *extra)
    first.wait_ready()
    time.sleep(0.5)
    first.kill()
    killed = time.monotonic()
    second = Processor(settings, *extra)
    offset = probe.send()
    try:
        ready = second.wait_ready() - killed
        answered = probe.answered_after(offset, killed)
    finally:
        second.stop()
    return ready, answered


def broker_trial(kafka: LocalKafka, probe: Probe) -> tuple[float, float]:
    kafka.kill()
    time.sleep(2)
    started = time.monotonic()
    kafka.up()
    back = time.monotonic()
    offset = probe.send()
    return back - started, probe.answered_after(offset, back)


def main() -> None:
    base = load_settings()
    directory = Path(tempfile.mkdtemp(prefix="mesh-bench-recovery-"))
    kafka = LocalKafka(directory / "kafka", free_port_pair(), version=base.kafka_version)
    kafka.up()
    settings = base.with_overrides(
        bootstrap_servers=kafka.bootstrap,
        topic_prefix="bench.recovery.",
        state_dir=directory / "state",
        partitions=3,
    )
    control_signers(settings)
    cluster = Cluster.of(settings)
    TopicAdmin(cluster).ensure()
    registry = KafkaRegistry(cluster)
    Serde(registry).register_all()
    registry.close()
    probe = Probe(settings)
    ready: dict[str, list[float]] = {"static": [], "dynamic": []}
    answered: dict[str, list[float]] = {"static": [], "dynamic": []}
    broker_back: list[float] = []
    broker_answer: list[float] = []
    try:
        for trial in range(TRIALS):
            for mode in ("static", "dynamic") if trial % 2 == 0 else ("dynamic", "static"):
                r, a = processor_trial(settings, probe, mode)
                ready[mode].append(r)
                answered[mode].append(a)
                print(f"trial {trial} {mode}: ready {r:.2f}s, answering {a:.2f}s", flush=True)
        running = Processor(settings)
        running.wait_ready()
        try:
            for trial in range(TRIALS):
                back, answer = broker_trial(kafka, probe)
                broker_back.append(back)
                broker_answer.append(answer)
                print(f"broker trial {trial}: up in {back:.2f}s, answering {answer:.2f}s after")
            assert running.process.poll() is None, "the kill-switch exited"
        finally:
            running.stop()
    finally:
        probe.close()
        kafka.down()

    figures: dict[str, float | int] = {"trials": TRIALS}
    for mode in ("static", "dynamic"):
        figures[f"processor kill -> ready, {mode} membership (s, median)"] = median(ready[mode])
        figures[f"processor kill -> ready, {mode} membership (s, worst)"] = max(ready[mode])
        figures[f"processor kill -> answering, {mode} membership (s, median)"] = median(
            answered[mode]
        )
        figures[f"processor kill -> answering, {mode} membership (s, worst)"] = max(answered[mode])
    figures["broker kill: broker up again (s, median)"] = median(broker_back)
    figures["broker back -> kill-switch answering (s, median)"] = median(broker_answer)
    figures["broker back -> kill-switch answering (s, worst)"] = max(broker_answer)
    ratios = {
        "answering after a processor kill, static / dynamic (median)": median(answered["static"])
        / median(answered["dynamic"]),
    }
    notes = (
        f"{TRIALS} trials per case on a local broker of the bench's own; the kill-switch as "
        "`mesh processors run killswitch` (a child process: the times include starting Python); "
        "answering = a telemetry record produced after the fault is committed by its group. "
        "Dynamic membership with a 6 s session timeout (the client default is 45 s)."
    )
    path = write_results("recovery", figures, ratios, notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
