"""The `mesh` command as a user runs it: real processes, the session broker."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mesh.settings import Settings
from stack.keeper import read_restarts
from tests.conftest import free_port_pair

MESH = [sys.executable, "-m", "cli"]


def run(
    args: list[str], settings: Settings | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        MESH + args,
        capture_output=True,
        text=True,
        env=environment(settings, **env),
        timeout=180,
        check=False,
    )


def environment(settings: Settings | None = None, **env: str) -> dict[str, str]:
    """This process's environment without its MESH_ variables, plus those of ``settings``."""
    result = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    if settings is not None:
        result |= {
            "MESH_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
            "MESH_TOPIC_PREFIX": settings.topic_prefix,
            "MESH_STATE_DIR": str(settings.state_dir),
            "MESH_PARTITIONS": str(settings.partitions),
        }
        security = {
            "MESH_SECURITY_PROTOCOL": settings.security_protocol,
            "MESH_SSL_CA_LOCATION": settings.ssl_ca_location,
        }
        result |= {k: v for k, v in security.items() if v}
    result["COLUMNS"] = "200"
    return result | env


def test_bad_arguments_are_usage_errors() -> None:
    result = run(["kafka", "up", "--port", "eleven"])
    assert result.returncode == 2
    assert "Invalid value for '--port'" in result.stderr
    assert "is not a valid int" in result.stderr
    low = run(["kafka", "up", "--port", "5"])
    assert low.returncode == 2
    assert "5 is not in the range 1024<=x<=65534" in low.stderr
    assert run(["no-such-command"]).returncode == 2
    unreasoned = run(["resume", "research"])  # resuming is audited like halting: say why
    assert unreasoned.returncode == 2 and "--reason" in unreasoned.stderr


def test_version() -> None:
    result = run(["--version"])
    assert result.returncode == 0 and result.stdout.startswith("mesh 0.")


def test_broken_config_is_one_clear_line(tmp_path: Path) -> None:
    result = run(["topics", "ensure"], MESH_PARTITIONS="lots", MESH_STATE_DIR=str(tmp_path))
    assert result.returncode == 2
    assert "error (config): MESH_PARTITIONS='lots' is not a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_messages_are_never_wrapped_whatever_the_width(tmp_path: Path) -> None:
    result = run(["topics", "ensure"], MESH_PARTITIONS="lots", MESH_STATE_DIR=str(tmp_path),
                 COLUMNS="40")  # fmt: skip
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error (config): MESH_PARTITIONS='lots'") and len(line) > 40


def test_an_export_to_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "a.jsonl"
    result = run(["audit", "export", "--out", str(out)], MESH_STATE_DIR=str(tmp_path))
    assert result.returncode == 2
    assert f"directory {out.parent} does not exist" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_no_broker_says_what_to_do(tmp_path: Path) -> None:
    result = run(["topics", "ensure"], MESH_STATE_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "Run `mesh kafka up`, or set MESH_BOOTSTRAP_SERVERS" in result.stderr


@pytest.mark.parametrize(
    "command", [["agents", "ls"], ["halts"], ["state", "show", "t"], ["audit", "verify"]]
)
def test_an_unreachable_broker_is_one_line_that_names_it(
    command: list[str], tmp_path: Path
) -> None:
    """Issue 17: these printed 'error (unexpected): KafkaException ... a bug in the mesh'."""
    result = run(command, MESH_BOOTSTRAP_SERVERS="127.0.0.1:1", MESH_STATE_DIR=str(tmp_path),
                 MESH_PROFILE="development")  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error (kafka_unavailable): no Kafka broker answered at 127.0.0.1:1")


def test_topics_ensure_twice(settings: Settings) -> None:
    first = run(["topics", "ensure"], settings)
    assert first.returncode == 0, first.stderr
    assert f"created  {settings.topic_prefix}mesh.audit.v1" in first.stdout
    second = run(["topics", "ensure"], settings)
    assert second.returncode == 0
    assert "created" not in second.stdout
    assert f"ok       {settings.topic_prefix}mesh.audit.v1" in second.stdout


def test_topics_ls_and_keys_show_print_json_for_scripts(settings: Settings) -> None:
    assert run(["topics", "ensure"], settings).returncode == 0
    rows = [
        json.loads(line) for line in run(["topics", "ls", "--json"], settings).stdout.splitlines()
    ]
    audit = next(r for r in rows if r["topic"] == f"{settings.topic_prefix}mesh.audit.v1")
    assert audit["partitions"] == settings.partitions and audit["what"]
    keys = [
        json.loads(line) for line in run(["keys", "show", "--json"], settings).stdout.splitlines()
    ]
    assert {k["id"] for k in keys} == {"mesh", "operator:root"}
    assert all(len(k["public_key"]) == 64 for k in keys)


def test_schemas_check_and_register(settings: Settings) -> None:
    assert run(["schemas", "check"]).returncode == 0
    assert run(["topics", "ensure"], settings).returncode == 0
    registered = run(["schemas", "register"], settings)
    assert registered.returncode == 0, registered.stderr
    assert "mesh.Envelope" in registered.stdout


def test_demo_runs_the_fleet_halts_the_runaway_chain_and_verifies_the_audit(
    settings: Settings,
) -> None:
    port = ["--registry-port", str(free_port_pair()), "--console-port", str(free_port_pair(1))]
    try:
        result = run(["demo", *port], settings)
        assert result.returncode == 0, result.stdout + result.stderr
        out = " ".join(result.stdout.split())  # rich wraps long lines
        assert "tasks: 12/12 completed (3 escalated to a person" in out
        assert "halt: chain " in out and "research-b by chain_spend" in out
        assert "the same agents went on serving other chains" in out
        assert "policy: the operator's fleet default v1, drafting v1, review v1 in force" in out
        # issue 21: review is refused production until its drill passes, then certified
        assert "gates: review refused production, gates failing: killswitch_tested" in out
        assert "review !! refused: not certified for production: gates failing" in out
        assert "gates: review drill passed: halt acknowledged in" in out
        assert "gates: review v1 certified for production until" in out
        assert "review, drafting certified to message them" in out
        assert "KPIs over the last hour, from mesh.kpis.v1" in out  # the kpis processor's
        assert "workflow:customer-request: against $15.60 per task without agents" in out
        assert "person approved escalation" in out  # the desk's tasks went to a person
        shown = run(["policy", "show", "intake"], settings)
        assert shown.returncode == 0 and '"budget_usd": 10.0' in shown.stdout
        assert "OK every chain verifies" in out
        halts = run(["halts"], settings)
        assert ": chain halt by chain_spend (killswitch:0)" in halts.stdout
        assert "participants intake, research-b (they go on with other chains)" in halts.stdout
        status = run(["status"], settings)
        assert status.returncode == 0 and "processors: running (pid" in status.stdout
        assert "processors: running" in status.stdout and ", 0 restarts" in status.stdout
        assert "processors: ready, last seen" in status.stdout
        assert "halts in force: chain:" in status.stdout
        view = json.loads(run(["status", "--json"], settings).stdout)  # the same, for scripts
        assert view["healthy"] and view["processors_ready"]
        services = {s["name"] for s in view["services"]}
        assert services == {"processors", "registry-api", "drill", "console"}
        assert "watch and steer the fleet in the console: http://127.0.0.1:" in out
        assert view["drill"]["healthy"], view["drill"]  # `mesh up` drilled the kill-switch
        assert "kill-switch drill: passed" in status.stdout
        assert any(key.startswith("chain:") for key in view["halts_in_force"])
        history = run(["policy", "history", "--json"], settings).stdout.splitlines()
        by_target = {row["target"]: row for row in map(json.loads, history)}
        assert set(by_target) == {"*", "drafting", "review"}
        fleet = by_target["*"]
        assert (fleet["target"], fleet["version"]) == ("*", 1) and fleet["at"].endswith("Z")
        assert fleet["policy"]["budget_usd"] == 10.0

        keeper = int((settings.state_dir / "run" / "processors.pid").read_text())
        os.kill(child_of(keeper), signal.SIGKILL)  # the processors crash; their keeper stays
        restarts = settings.state_dir / "run" / "processors.restarts"
        deadline = time.monotonic() + 30
        while read_restarts(restarts).count < 1:
            assert time.monotonic() < deadline, "the keeper did not restart the processors"
            time.sleep(0.1)
        status = " ".join(run(["status"], settings).stdout.split())
        assert "processors: running" in status and "1 restarts, last after exit code -9" in status

        # the stack is up: reused; --stay keeps the fleet attached until Ctrl-C (issue 17)
        again = spawn(["demo", "--tasks", "6", "--stay", *port], settings)
        try:
            attached = again.wait_for_line("the fleet stays attached", 180)
            assert "processors: already running" in attached
            assert "research-b by chain_spend" in " ".join(attached.split())  # a new chain
            assert "fleet default v1, drafting v1" in attached  # in force: not published again
            assert "(an earlier run)" in attached  # still certified: no second drill
            live = agent_rows(run(["agents", "ls", "--json"], settings).stdout)
            assert {live[a]["status"] for a in ("intake", "research-b", "human-desk")} == {"LIVE"}
            assert live["review"]["environment"] == "production"
            assert live["drafting"]["certified"].startswith("production until")
            assert "chain halt by chain_spend" in run(["halts"], settings).stdout
            again.process.send_signal(signal.SIGINT)  # Ctrl-C: the fleet detaches, retired
            assert again.process.wait(60) == 0, again.output()
        finally:
            again.close()
        assert "detaching the fleet (its agents retire)" in again.output()
        gone = agent_rows(run(["agents", "ls", "--json"], settings).stdout)
        assert gone["intake"]["status"] == "RETIRED"
    finally:
        stopped = run(["down"], settings)
    assert "processors: stopped" in stopped.stdout and "registry-api: stopped" in stopped.stdout


def agent_rows(lines: str) -> dict[str, dict[str, Any]]:
    return {row["agent_id"]: row for row in map(json.loads, lines.splitlines())}


@dataclass
class Spawned:
    """A `mesh` command left running, its output read as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def wait_for_line(self, text: str, timeout_s: float) -> str:
        """Read until a line holds ``text``; returns everything read so far."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()}"
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"exited before {text!r}:\n{self.output()}")
            self.lines.append(line)
        return self.output()

    def output(self) -> str:
        stdout = self.process.stdout
        if self.process.poll() is not None and stdout is not None and not stdout.closed:
            self.lines += stdout.readlines()
        return "".join(self.lines)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.output()
        if self.process.stdout is not None:
            self.process.stdout.close()


def spawn(args: list[str], settings: Settings, **env: str) -> Spawned:
    """`mesh ARGS` left running (stdin is not a terminal), its output read by the caller."""
    process = subprocess.Popen(
        MESH + args,
        env=environment(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return Spawned(process)


def child_of(parent: int) -> int:
    """The first process whose parent is ``parent`` (from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            return int(stat.parent.name)
    raise AssertionError(f"process {parent} has no child")
