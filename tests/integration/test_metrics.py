"""Issue 11, metrics for the tools ops teams run: the processors and a sidecar serve
Prometheus metrics that the official parser reads (names, types, labels, values)."""

from __future__ import annotations

import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mesh.settings import Settings
from tests.conftest import free_port_pair
from tests.integration.test_cli import spawn


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
            if handled > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert handled > 0
        assert found["mesh_processor_ready"][(("processor", "kpis"),)] == 1.0
        assert found["mesh_processor_transactions_total"][(("processor", "registry"),)] >= 1
        assert (("processor", "kpis"),) in found["mesh_processor_lag_records"]

        connection = json.loads((settings.state_dir / "sidecars" / "metered.json").read_text())
        assert httpx.get(f"{connection['url']}/metrics").status_code == 401  # its token
        mine = scrape(f"{connection['url']}/metrics", connection["token"])
        assert mine["mesh_sidecar_halted"][(("agent", "metered"),)] == 0.0
        assert (("agent", "metered"),) in mine["mesh_sidecar_messages_sent_total"]
    finally:
        sidecar.close()
        processors.close()
