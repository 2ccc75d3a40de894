"""Issue 11, the operator console in a real browser (Debian's chromium through Playwright),
on a real broker: the fleet view lists the agents; a halt issued from the CLI appears without
a reload; clicking Halt on an agent makes its sidecar refuse sends and the audit log record
the operator; the read-only role cannot halt; a wrong token gets 401. Each view's screenshot
is written to ``docs/console/`` (``MESH_SCREENSHOTS`` elsewhere)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from console.auth import csrf_for
from mesh.adapters.keyfiles import control_signers, mesh_key
from mesh.adapters.metrics import serve_metrics
from mesh.domain.identity import AgentKey
from mesh.domain.topics import inbox_topic
from mesh.settings import Cluster, Settings
from processors.audit import AuditProcessor
from processors.kpis import KpisProcessor
from processors.runtime.engine import Engine
from processors.runtime.exposition import processor_families
from tests.conftest import free_port_pair
from tests.integration.fleet import Sent, codec_for, produce, running
from tests.integration.test_cli import Spawned, run, spawn
from tests.integration.test_killswitch import telemetry
from tests.integration.test_metrics import scrape
from tests.integration.test_sidecar import registry_processor

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("MESH_SCREENSHOTS", Path(__file__).parents[2] / "docs" / "console"))


class Console:
    def __init__(self, settings: Settings, port: int, process: Spawned) -> None:
        self.settings, self.base, self.process = settings, f"http://127.0.0.1:{port}", process
        console_dir = settings.state_dir / "console"
        self.operator = (console_dir / "operator.token").read_text().strip()
        self.viewer = (console_dir / "viewer.token").read_text().strip()


@pytest.fixture
def mesh_console(settings: Settings, topics: object) -> Iterator[Console]:
    codec, registry = codec_for(settings)
    cluster = Cluster.of(settings)
    sidecars: list[Spawned] = []
    engines = [
        Engine.keyed(registry_processor(settings), cluster, codec),
        Engine.keyed(AuditProcessor(mesh_key(settings)), cluster, codec),
        Engine.keyed(KpisProcessor(codec.serde, control_signers(settings)), cluster, codec),
    ]
    metrics = free_port_pair(1)  # the processors' own /metrics, as `processors run` serves it
    serve_metrics(lambda: processor_families(engines, {}), metrics)
    with running(engines):
        try:
            for agent, skill in (("alpha", "research"), ("beta", "review")):
                args = ["sidecar", "run", agent, "--capability", skill]
                sidecars.append(spawn(args, settings, MESH_PROFILE="development"))
                sidecars[-1].wait_for_line("sidecar of", 60)
            port = free_port_pair(1)
            scraped = [f"http://127.0.0.1:{metrics}/metrics", "http://127.0.0.1:9/metrics"]
            args = ["console", "--port", str(port)]
            args += [a for url in scraped for a in ("--processor-metrics", url)]
            process = spawn(args, settings)
            process.wait_for_line("console: read-only", 60)
            yield Console(settings, port, process)
            process.close()
        finally:
            for sidecar in sidecars:
                sidecar.close()
    registry.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


def login(browser: Browser, console: Console, token: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    page.goto(f"{console.base}/?token={token}")
    expect(page.locator("#live")).to_have_text("live", timeout=15_000)
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def view(page: Page, name: str) -> None:
    page.click(f"nav button[data-view={name}]")


def test_every_route_needs_a_token_and_only_an_operator_halts(mesh_console: Console) -> None:
    base = mesh_console.base
    assert httpx.get(f"{base}/?token=wrong").status_code == 401
    assert httpx.get(f"{base}/").status_code == 401
    assert httpx.get(f"{base}/api/state").status_code == 401
    assert httpx.get(f"{base}/static/console.js").status_code == 401
    viewer = {"authorization": f"Bearer {mesh_console.viewer}"}
    assert httpx.get(f"{base}/api/state", headers=viewer).json()["role"] == "viewer"
    halt = {"scope": "agent", "target": "alpha", "reason": "x"}
    refused = httpx.post(f"{base}/api/halt", headers=viewer, json=halt)
    assert refused.status_code == 403 and refused.json()["error"] == "read_only"
    operator = {"authorization": f"Bearer {mesh_console.operator}"}
    forged = httpx.post(f"{base}/api/halt", headers=operator, json=halt)  # no CSRF token
    assert forged.status_code == 403 and forged.json()["error"] == "csrf"
    signed = {**operator, "x-csrf-token": csrf_for(mesh_console.operator)}
    typo = httpx.post(f"{base}/api/halt", headers=signed, json={**halt, "target": "alpah"})
    assert typo.status_code == 409, typo.text  # checked against the registry the console holds
    assert "did you mean alpha" in typo.json()["message"]
    token_file = mesh_console.settings.state_dir / "console" / "operator.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert httpx.get(f"{base}/metrics").status_code == 401
    deadline = time.monotonic() + 20
    while True:  # Prometheus metrics, read with the official parser
        found = scrape(f"{base}/metrics", mesh_console.viewer)
        live = found["mesh_console_agents"].get((("status", "LIVE"),), 0)
        if live == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert live == 2 and found["mesh_console_halts_in_force"][()] == 0
    with httpx.stream("GET", f"{base}/events?q=review", headers=viewer, timeout=10) as stream:
        first = next(line for line in stream.iter_lines() if line.startswith("data: "))
    snapshot = json.loads(first.removeprefix("data: "))  # filtered on the server
    assert [a["agent_id"] for a in snapshot["agents"]] == ["beta"]
    assert (snapshot["matching"], snapshot["total"]) == (1, 2)


def test_the_console_watches_and_steers_the_fleet_in_chromium(
    mesh_console: Console, browser: Browser
) -> None:
    settings = mesh_console.settings
    page = login(browser, mesh_console, mesh_console.operator)
    for agent in ("alpha", "beta"):  # the fleet view lists the agents
        expect(page.locator(f"tr[data-agent={agent}] td.status")).to_have_text(
            "LIVE", timeout=20_000
        )
    shot(page, "fleet")
    _spend_over_the_last_minute_counts_only_signed_calls(page, settings)

    _api("alpha", settings, "POST", "/v1/tasks/t-refund/events", {"kind": "REQUESTED"})
    _api("alpha", settings, "PUT", "/v1/tasks/t-refund/context/request", {"value": {"usd": 40}})
    _api("alpha", settings, "POST", "/v1/tasks/t-refund/events",
         {"kind": "HANDED_OFF", "target": "beta"})  # fmt: skip
    view(page, "tasks")  # its timeline from the audit log, its context as of a time
    page.fill("#task-form input[name=task]", "t-refund")
    for _ in range(30):  # until the audit processor has recorded all three
        page.click("#task-form button")
        page.wait_for_timeout(500)
        if page.locator("#timeline-table tbody tr").count() == 3:
            break
    expect(page.locator("#timeline-table tbody tr")).to_have_count(3)
    expect(page.locator("#task-state")).to_contain_text("HANDED_OFF")
    expect(page.locator("#task-state")).to_contain_text('{"usd":40}')
    shot(page, "tasks")
    page.eval_on_selector(
        "#as-of", "s => { s.value = s.min; s.dispatchEvent(new Event('input')); }"
    )
    expect(page.locator("#task-state")).to_contain_text("REQUESTED")

    view(page, "fleet")
    halted = run(["halt", "alpha", "--reason", "from the cli", "--wait"], settings)
    assert halted.returncode == 0, halted.stdout + halted.stderr
    expect(page.locator("tr[data-agent=alpha] td.status")).to_have_text("HALTED", timeout=20_000)
    view(page, "halts")  # the halt is listed, without a reload, with who stopped how fast
    row = page.locator("#halts-table tbody tr", has_text="from the cli")
    expect(row).to_contain_text("operator:")
    stopped = row.locator("td[data-stopped]")
    expect(stopped).to_contain_text(re.compile(r"1 stopped; last after \d+ ms"))
    expect(stopped).not_to_contain_text("waiting")
    _a_forged_ack_stops_nobody(page, settings, stopped)
    shot(page, "halts")
    row.locator("button", has_text="Map").click()  # its blast radius, outlined on the map
    reach = "() => cy && cy.$id('alpha').data('reach') === 1 && cy.$id('beta').data('reach') === 0"
    page.wait_for_function(reach)

    view(page, "fleet")
    page.once("dialog", lambda d: d.accept())
    page.click("tr[data-agent=beta] button[data-action=halt]")
    page.fill("#confirm-reason", "clicked in the console")
    page.click("#confirm-ok")
    expect(page.locator("#flash")).to_contain_text("halt agent beta sent as operator:")
    expect(page.locator("tr[data-agent=beta] td.status")).to_have_text("HALTED", timeout=20_000)
    refused = _send_as("beta", settings)  # its sidecar refuses to act
    assert refused.status_code == 409 and refused.json()["error"] == "halted", refused.text
    commands = _audited("beta", "clicked in the console", settings)  # the audit log has it
    assert '"requested_by": "operator:' in json.dumps(commands[0])

    view(page, "audit")  # search, verify with progress, export
    page.fill("#audit-form input[name=agent]", "beta")
    page.click("#audit-form button[value=search]")
    expect(page.locator("#audit-table tbody")).to_contain_text("ControlCommand HALToperator:root")
    page.click("#verify")
    expect(page.locator("#verify-progress")).to_contain_text("OK: every chain verifies",
                                                             timeout=30_000)  # fmt: skip
    shot(page, "audit")
    exported = httpx.get(f"{mesh_console.base}/api/audit/export?agent=beta",
                         headers={"authorization": f"Bearer {mesh_console.viewer}"})  # fmt: skip
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert lines and all("record_hash" in line and "original_b64" in line for line in lines)

    view(page, "map")
    page.wait_for_timeout(500)
    shot(page, "map")
    view(page, "kpis")  # the kpis processor counted the halts: charted per five minutes
    expect(page.locator("#traffic-chart .u-legend")).to_contain_text("halts", timeout=20_000)
    expect(page.locator("#kpis-table tbody")).to_contain_text("fleet")
    shot(page, "kpis")
    view(page, "escalations")
    shot(page, "escalations")

    produce(settings, [Sent(inbox_topic("alpha").name, "k", b"\x00junk that is no message")])
    view(page, "dead")  # alpha's sidecar dead-letters it; the page shows it with its bytes
    expect(page.locator("#dead-table tbody tr").first).to_contain_text(
        "mesh.inbox.alpha.v1", timeout=30_000
    )
    page.locator("#dead-table tbody tr").first.click()
    expect(page.locator("#dead-bytes")).to_contain_text("00 6a 75 6e 6b")  # "\0junk"
    shot(page, "dead-letters")
    view(page, "health")
    expect(page.locator("#health-body")).to_contain_text("registry", timeout=30_000)
    expect(page.locator("#health-body")).to_contain_text("subjects")
    expect(page.locator("#health-body")).to_contain_text("1 running (stable)")
    expect(page.locator("#health-body")).to_contain_text(  # the processors' own metrics
        re.compile(r"registry\s*ready; \d+ records handled( \([\d.]+/s\))?; restored \d+ records")
    )
    expect(page.locator("#health-body")).to_contain_text("http://127.0.0.1:9/metrics")
    shot(page, "health")


def test_the_viewer_watches_but_cannot_halt(mesh_console: Console, browser: Browser) -> None:
    page = login(browser, mesh_console, mesh_console.viewer)
    expect(page.locator("tr[data-agent=alpha] td.status")).to_have_text("LIVE", timeout=20_000)
    assert page.locator("button[data-action=halt]").count() == 0
    assert page.locator("#who").inner_text() == "viewer (read-only)"


def _spend_over_the_last_minute_counts_only_signed_calls(page: Page, settings: Settings) -> None:
    codec, registry = codec_for(settings)
    try:  # $9 of model calls forged in beta's name (another key), then beta's own $0.50
        forged = telemetry(codec, AgentKey.generate("beta"), "MODEL_CALL", cost_usd=9.0)
        produce(settings, [forged])
    finally:
        registry.close()
    _api("beta", settings, "POST", "/v1/telemetry/model-calls", {"model": "m", "cost_usd": 0.5})
    _api("alpha", settings, "POST", "/v1/telemetry/model-calls", {"model": "m", "cost_usd": 0.25})
    spend_1m = "td:nth-child(9)"  # the fleet's "spend 1m $" column
    expect(page.locator(f"tr[data-agent=alpha] {spend_1m}")).to_have_text("0.25", timeout=20_000)
    expect(page.locator(f"tr[data-agent=beta] {spend_1m}")).to_have_text("0.5", timeout=20_000)


def _a_forged_ack_stops_nobody(page: Page, settings: Settings, stopped: Locator) -> None:
    """A HALT_ACK of alpha's halt in beta's name but signed with another key, for an instance
    that never ran, is not counted: alpha's halt still shows the one instance that stopped."""
    command_id = page.evaluate("() => state.halts.find((h) => h.target === 'alpha').command_id")
    codec, registry = codec_for(settings)
    try:
        forged = telemetry(codec, AgentKey.generate("beta"), "HALT_ACK", name="operator",
                           detail=f"{command_id}: forged", instance_id="ghost")  # fmt: skip
        produce(settings, [forged])
    finally:
        registry.close()
    # beta's own next report, on the same partition after it: once the page shows it, the
    # console has read past the forgery
    _api("beta", settings, "POST", "/v1/telemetry/model-calls", {"model": "m", "cost_usd": 0.3})
    view(page, "fleet")  # $0.30 more within the minute (the $0.50 before it may have aged out)
    expect(page.locator("tr[data-agent=beta] td:nth-child(9)")).to_have_text(
        re.compile(r"^(0\.3|0\.8)$"), timeout=20_000
    )
    view(page, "halts")
    expect(stopped).to_contain_text(re.compile(r"^1 stopped"))


def _audited(agent: str, text: str, settings: Settings) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        audit = run(["audit", "replay", "--agent", agent], settings)
        found = [r for r in map(json.loads, audit.stdout.splitlines()) if text in json.dumps(r)]
        if found or time.monotonic() > deadline:
            assert found, f"no audit record of {agent} with {text!r}:\n{audit.stdout[-2000:]}"
            return found
        time.sleep(0.5)


def _api(agent: str, settings: Settings, method: str, path: str, body: object) -> None:
    connection = json.loads((settings.state_dir / "sidecars" / f"{agent}.json").read_text())
    answer = httpx.request(
        method, f"{connection['url']}{path}", json=body,
        headers={"authorization": f"Bearer {connection['token']}"},
    )  # fmt: skip
    assert answer.status_code < 300, answer.text


def _send_as(agent: str, settings: Settings) -> httpx.Response:
    connection = json.loads((settings.state_dir / "sidecars" / f"{agent}.json").read_text())
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.post(
            f"{connection['url']}/v1/messages",
            headers={"authorization": f"Bearer {connection['token']}"},
            json={"to": "alpha", "text": "still there?"},
        )
        if answer.status_code == 409 or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)
