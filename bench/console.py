"""Console benchmark: from a record's produce to its change in the DOM of a real browser.

On one broker, in one run:

1. **Idle fleet.** The console (``mesh console``, its own process) and Debian's chromium on its
   page. 220 operator-signed halt and resume commands, one at a time, are produced to the
   control topic (the first 20 are warm-up); a MutationObserver in the page notes when the
   halt count it shows changes. Latency = the browser's clock at the change minus this
   process's clock at the produce (one machine, one clock).
   Baseline, same broker and payloads: the same signed bytes produced one at a time and read
   by a plain confluent-kafka consumer (fetch wait 10 ms, as the console's reader), produce
   to receipt.
2. **10,000 agents heartbeating.** A load generator registers 10,000 agents and heartbeats
   each every 5 s (2,000 events/s) for 60 s; the registry processor (its own process, as
   `mesh up` runs it) folds them into the registry the console follows, the page open on the
   fleet view. The console process's CPU
   and peak RSS are sampled from /proc, and 200 more halts and resumes are timed to the DOM,
   and by a plain confluent-kafka reader of the control topic on the same broker (the
   baseline under the same load: what the broker alone takes).
   The fleet table is virtualised: the rows in the DOM are counted, and the page is scrolled
   to the last of the 10,000 agents.
Target: p99 < 500 ms.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition
from playwright.sync_api import Page, sync_playwright

from bench._kafka import mesh_on_fresh_topics
from bench._report import median, percentile, write_results
from bench.registry import FLEET, load_generator
from mesh.adapters.commands import publish_command
from mesh.adapters.kafka.config import consumer_config, producer_config
from mesh.adapters.keyfiles import operator_key
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, Scope, control_record
from mesh.domain.topics import CONTROL, TELEMETRY
from mesh.settings import Cluster, Settings

SAMPLES, WARMUP, UNDER_LOAD = 220, 20, 200
LOAD_S = 60.0
PORT = 8097
CHROMIUM = "/usr/bin/chromium"
OBSERVER = """() => {
  window.__seen = [];
  window.__at = () => state.haltsAt;
  const node = document.getElementById("halt-count");
  let shown = node.textContent;  // a change of the count, not a rewrite of the same one
  new MutationObserver(() => {
    if (node.textContent === shown) return;
    shown = node.textContent;
    window.__seen.push([Date.now(), shown, window.__at()]);
  }).observe(node, { childList: true, characterData: true, subtree: true });
}"""


def environment(settings: Settings, bootstrap: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MESH_")},
        "MESH_BOOTSTRAP_SERVERS": bootstrap,
        "MESH_TOPIC_PREFIX": settings.topic_prefix,
        "MESH_STATE_DIR": str(settings.state_dir),
        "MESH_PARTITIONS": str(settings.partitions),
        "PYTHONUNBUFFERED": "1",
    }


def start_console(settings: Settings, bootstrap: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
        [sys.executable, "-m", "cli", "console", "--port", str(PORT)],
        env=environment(settings, bootstrap), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if "console: operator " in line:
            return process, line.split("console: operator ", 1)[1].strip()
    raise SystemExit("the console did not start")


def connected_producer(cluster: Cluster) -> Producer:
    """One producer for every command of a phase, connected first: a new idempotent producer
    waits for its producer id, which under load took about 500 ms (the first runs of this
    bench made one per pair of commands and timed that)."""
    producer = Producer(producer_config(cluster))
    producer.list_topics(timeout=10)
    return producer


def start_registry(settings: Settings, bootstrap: str) -> subprocess.Popen[str]:
    """The registry processor, `mesh processors run registry`, once it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "processors", "run", "registry"],
        env=environment(settings, bootstrap), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("ready:") or " ready:" in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # drain it
            return process
    raise SystemExit("the registry processor did not start")


def dom_latencies(
    page: Page,
    cluster: Cluster,
    codec: MessageCodec,
    count: int,
    server: list[float],
    produced: list[float] | None = None,
    acked: list[float] | None = None,
    producer: Producer | None = None,
) -> list[float]:
    """Halt, resume, halt ... one at a time; ms from produce to the page showing it. Appends
    to ``server`` the part until the console pushed the change (its ``at``)."""
    producer = producer or connected_producer(cluster)
    operator = operator_key(cluster.settings).agent_id
    latencies: list[float] = []
    halt_id: str | None = None
    for i in range(count):
        action = Action.HALT if halt_id is None else Action.RESUME
        record = control_record(
            action, Scope.AGENT, "bench-agent", rule="operator", reason=f"bench {i}",
            requested_by=operator, affected=["bench-agent"], lifts=halt_id,
        )  # fmt: skip
        halt_id = str(record["command_id"]) if action is Action.HALT else None
        seen = page.evaluate("() => window.__seen.length")
        produced_ms = time.time() * 1000
        if produced is not None:
            produced.append(produced_ms)
        publish_command(cluster, codec, record, producer)
        if acked is not None:  # the broker has it (the produce's flush returned)
            acked.append(time.time() * 1000 - produced_ms)
        page.wait_for_function(f"() => window.__seen.length > {seen}", timeout=10_000)
        at_ms, _, pushed_ms = page.evaluate(f"() => window.__seen[{seen}]")
        latencies.append(at_ms - produced_ms)
        server.append(pushed_ms - produced_ms)
    return latencies


def raw_reader_at_end(cluster: Cluster, topic: str) -> Consumer:
    """The baseline's reader: plain confluent-kafka, fetch wait 10 ms (as the console's),
    assigned every partition of ``topic`` at its end."""
    consumer = Consumer(consumer_config(cluster, f"bench-raw-{time.time_ns()}",
                                        **{"fetch.wait.max.ms": 10}))  # fmt: skip
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([
        TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
        for p in partitions
    ])  # fmt: skip
    return consumer


def raw_latencies(cluster: Cluster, codec: MessageCodec, count: int) -> list[float]:
    """The same signed command bytes, produced and consumed with plain confluent-kafka."""
    topic = cluster.topic(TELEMETRY)
    producer = Producer(producer_config(cluster))
    consumer = raw_reader_at_end(cluster, topic)
    key = operator_key(cluster.settings)
    record = control_record(Action.HALT, Scope.AGENT, "raw", rule="operator", reason="raw",
                            requested_by=key.agent_id, affected=["raw"])  # fmt: skip
    value = seal_control(codec, key, record, int(time.time() * 1000))
    latencies: list[float] = []
    for _ in range(count):
        started = time.time()
        producer.produce(topic, value, b"raw")
        producer.flush(10)
        while True:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        latencies.append((time.time() - started) * 1000)
    consumer.close()
    return latencies


class RawFollower:
    """A plain confluent-kafka reader of the control topic (read_committed, fetch wait 10 ms,
    as the console's), noting when each record arrives: under load, how much of the console's
    latency the broker alone already takes."""

    def __init__(self, cluster: Cluster) -> None:
        topic = cluster.topic(CONTROL)
        self.arrived: list[float] = []
        self._consumer = raw_reader_at_end(cluster, topic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is not None and message.error() is None:
                self.arrived.append(time.time() * 1000)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def under_load(
    settings: Settings, bootstrap: str, codec: MessageCodec, page: Page, pid: int
) -> dict[str, Any]:
    cluster = Cluster(settings, bootstrap)
    registry = start_registry(settings, bootstrap)  # its own process, as `mesh up` runs it
    ready, go = multiprocessing.Event(), multiprocessing.Event()
    generator = multiprocessing.Process(
        target=load_generator, args=(settings, bootstrap, LOAD_S, ready, go)
    )
    generator.start()
    ready.wait(600)
    page.wait_for_function(f"() => document.getElementById('fleet-count').textContent"
                           f".includes('of {FLEET} agents')", timeout=300_000)  # fmt: skip
    go.set()
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    peak = rss_mib(pid)
    latencies: list[float] = []
    server: list[float] = []
    produced: list[float] = []
    acked: list[float] = []
    raw = RawFollower(cluster)
    producer = connected_producer(cluster)
    while generator.is_alive():
        if len(latencies) < UNDER_LOAD:
            latencies += dom_latencies(page, cluster, codec, 2, server, produced, acked, producer)
        peak = max(peak, rss_mib(pid))
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    cpu = (cpu_seconds(pid) - cpu_before) / elapsed
    generator.join()
    raw.close()
    broker = [a - p for a, p in zip(raw.arrived, produced, strict=False)]
    registry.terminate()
    registry.wait(30)
    rows = "[...document.querySelectorAll('#fleet-table tbody tr[data-agent]')]"
    drawn = page.evaluate(f"() => {rows}.length")
    page.evaluate(
        "() => { const box = document.getElementById('fleet-scroll'); "
        "box.scrollTop = box.scrollHeight; }"
    )
    page.wait_for_timeout(300)
    bottom = page.evaluate(f"() => {rows}.pop().dataset.agent")
    print(f"virtualised fleet table: {drawn} rows in the DOM; scrolled to the end: {bottom}")
    return {
        "10k: fleet rows in the DOM": drawn,
        "10k: console CPU (cores, mean)": cpu,
        "10k: console peak RSS (MiB)": peak,
        "10k: produce to DOM p50 (ms)": median(latencies),
        "10k: produce to DOM p90 (ms)": percentile(latencies, 0.90),
        "10k: produce to DOM p99 (ms)": percentile(latencies, 0.99),
        "10k: produce to DOM max (ms)": max(latencies),
        "10k: halts over 200 ms": sum(1 for v in latencies if v > 200),
        "10k: raw produce to consume p50 (ms)": median(broker),
        "10k: raw produce to consume p99 (ms)": percentile(broker, 0.99),
        "10k: raw over 200 ms": sum(1 for v in broker if v > 200),
        "10k: produce acknowledged p50 (ms)": median(acked),
        "10k: produce acknowledged p99 (ms)": percentile(acked, 0.99),
        "10k: produce acknowledged over 200 ms": sum(1 for v in acked if v > 200),
        "10k: produce to console push p50 (ms)": median(server),
        "10k: produce to console push p99 (ms)": percentile(server, 0.99),
        "10k: halts timed": len(latencies),
        "10k: agents": FLEET,
    }


def main() -> None:
    with mesh_on_fresh_topics("console", 6) as (settings, bootstrap, codec):
        cluster = Cluster(settings, bootstrap)
        console, link = start_console(settings, bootstrap)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-background-networking"],
                )  # fmt: skip
                page = browser.new_page()
                page.goto(link)
                page.wait_for_function(
                    "() => document.getElementById('live').textContent === 'live'"
                )
                page.evaluate(OBSERVER)
                pushed: list[float] = []
                dom = dom_latencies(page, cluster, codec, SAMPLES, pushed)[WARMUP:]
                raw = raw_latencies(cluster, codec, SAMPLES)[WARMUP:]
                idle_rss = rss_mib(console.pid)
                loaded = under_load(settings, bootstrap, codec, page, console.pid)
                browser.close()
        finally:
            console.terminate()
            console.wait(30)
    figures: dict[str, Any] = {
        "produce to DOM p50 (ms)": median(dom),
        "produce to DOM p99 (ms)": percentile(dom, 0.99),
        "produce to console push p50 (ms)": median(pushed[WARMUP:]),
        "produce to console push p99 (ms)": percentile(pushed[WARMUP:], 0.99),
        "raw produce to consume p50 (ms)": median(raw),
        "raw produce to consume p99 (ms)": percentile(raw, 0.99),
        "samples": len(dom),
        "console RSS, idle (MiB)": idle_rss,
        **loaded,
    }
    ratios = {
        "produce to DOM p50 / raw p50": figures["produce to DOM p50 (ms)"]
        / figures["raw produce to consume p50 (ms)"],
        "produce to DOM p99 / 500 ms target": figures["produce to DOM p99 (ms)"] / 500,
        "under 10k agents p99 / 500 ms target": loaded["10k: produce to DOM p99 (ms)"] / 500,
        "under 10k agents p50 / raw p50 under the same load": loaded["10k: produce to DOM p50 (ms)"]
        / loaded["10k: raw produce to consume p50 (ms)"],
        "under 10k agents p99 / raw p99 under the same load": loaded["10k: produce to DOM p99 (ms)"]
        / loaded["10k: raw produce to consume p99 (ms)"],
    }
    for k, v in {**figures, **ratios}.items():
        print(f"{k}: {v:,.2f}" if isinstance(v, float) else f"{k}: {v}")
    path = write_results(
        "console",
        figures,
        ratios,
        f"{SAMPLES - WARMUP} halts/resumes one at a time after {WARMUP} warm-up, produce to the "
        "halt count changing in Debian's chromium (MutationObserver); raw = the same signed "
        f"bytes, plain confluent-kafka; then {FLEET} agents heartbeating every 5 s for "
        f"{LOAD_S:.0f}s through the registry processor, page on the fleet view; under that "
        "load a plain confluent-kafka reader of the control topic times the same commands "
        "(raw under load). Console push = produce to the console handing the change to the "
        "page's stream.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
