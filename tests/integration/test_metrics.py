"""Issue 11, metrics for the tools ops teams run: the processors and a sidecar serve
Prometheus metrics that the official parser reads (names, types, labels, values), and a real
Prometheus server (Debian's) scrapes the processors and answers a query about them."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mesh.settings import Settings
from tests.conftest import free_port_pair
from tests.integration.test_cli import spawn

PROMETHEUS = "/usr/bin/prometheus"  # Debian's (scripts/install --test-tools)


def scrape(
    url: str, token: str | None = None
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(url, headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_processors_and_a_sidecar_serve_prometheus_metrics(
    settings: Settings, topics: object
) -> None:
    port = free_port_pair(1)
    processors = spawn(["processors", "run", "registry", "kpis", "--metrics-port", str(port)],
                       settings)  # fmt: skip
    sidecar = spawn(["sidecar", "run", "metered"], settings, MESH_PROFILE="development")
    try:
        processors.wait_for_line("ready:", 120)
        assert f"metrics: http://127.0.0.1:{port}/metrics" in processors.output()
        sidecar.wait_for_line("sidecar of", 60)
        deadline = time.monotonic() + 30
        while True:  # the registry processor handles the sidecar's registration and beats
            found = scrape(f"http://127.0.0.1:{port}/metrics")
            handled = found["mesh_processor_records_in_total"][(("processor", "registry"),)]
            sampled = "mesh_processor_partition_lag_records" in found  # once a second
            if (handled > 0 and sampled) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert handled > 0
        assert found["mesh_processor_ready"][(("processor", "kpis"),)] == 1.0
        assert found["mesh_processor_transactions_total"][(("processor", "registry"),)] >= 1
        assert (("processor", "kpis"),) in found["mesh_processor_lag_records"]
        per_partition = {  # the lag per assigned input partition adds up to the processor's
            labels: n
            for labels, n in found["mesh_processor_partition_lag_records"].items()
            if ("processor", "registry") in labels
        }
        assert per_partition and all(dict(k)["partition"].isdigit() for k in per_partition)
        assert (
            sum(per_partition.values())
            == found["mesh_processor_lag_records"][(("processor", "registry"),)]
        )

        connection = json.loads((settings.state_dir / "sidecars" / "metered.json").read_text())
        assert httpx.get(f"{connection['url']}/metrics").status_code == 401  # its token
        mine = scrape(f"{connection['url']}/metrics", connection["token"])
        assert mine["mesh_sidecar_halted"][(("agent", "metered"),)] == 0.0
        assert (("agent", "metered"),) in mine["mesh_sidecar_messages_sent_total"]
        scraped = _prometheus_scrapes(settings, port)  # a real Prometheus server
        assert scraped["up"] == 1.0 and scraped["records_in"] > 0
    finally:
        sidecar.close()
        processors.close()


def _prometheus_scrapes(settings: Settings, target: int) -> dict[str, float]:
    """Debian's prometheus scrapes the processors every second; what its query API says."""
    folder = settings.state_dir / "prometheus"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: mesh-processors\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )
    port = free_port_pair(1)
    server = subprocess.Popen(
        [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            found = {name: _query(port, query) for name, query in (
                ("up", 'up{job="mesh-processors"}'),
                ("records_in", 'mesh_processor_records_in_total{processor="registry"}'),
            )}  # fmt: skip
            if all(v is not None for v in found.values()) or time.monotonic() > deadline:
                return {k: v if v is not None else -1.0 for k, v in found.items()}
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(30)


def _query(port: int, query: str) -> float | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query})
    except httpx.HTTPError:
        return None  # not up yet
    if answer.status_code != 200:
        return None  # starting (it answers 503 until ready)
    result = answer.json().get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None
