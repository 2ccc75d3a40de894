"""Registry and state processors together on the broker, read back through the CLI."""

import json
import threading
import time

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.adapters.keyfiles import mesh_key
from mesh.domain.envelope import Envelope, RecipientKind
from mesh.domain.identity import AgentKey
from mesh.domain.topics import REGISTRY_EVENTS, TASKS
from mesh.settings import Cluster, Settings
from processors.registry import RegistryProcessor
from processors.runtime.engine import Engine
from processors.state import StateProcessor
from tests.integration.fleet import CARD, Sent, codec_for, produce, wait_for
from tests.integration.test_cli import run


def sealed(codec, key: AgentKey, subject: str, body: dict, n: int) -> bytes:
    envelope = Envelope(
        f"{key.agent_id}-{n}",
        "c",
        "c",
        key.agent_id,
        RecipientKind.BROADCAST,
        "",
        int(time.time() * 1000),
        task_id=body.get("task_id"),
    )
    return codec.seal(envelope, subject, body, key)


def test_registry_state_and_views(settings: Settings, topics: TopicAdmin) -> None:
    codec, registry = codec_for(settings)
    agents = {name: AgentKey.generate(name) for name in ("intake", "research")}
    produce(
        settings,
        [
            Sent(
                REGISTRY_EVENTS,
                name,
                sealed(
                    codec,
                    key,
                    "mesh.registry.AgentRegistered",
                    {
                        "agent_id": name,
                        "owner": "ops",
                        "version": "1",
                        "public_key": key.public_bytes,
                        "agent_card_json": CARD,
                        "depends_on_agents": ["research"] if name == "intake" else [],
                        "depends_on_tools": ["web.search"] if name == "research" else [],
                    },
                    0,
                ),
            )
            for name, key in agents.items()
        ],
    )
    bootstrap = settings.bootstrap_servers or ""
    engines = [
        Engine.keyed(RegistryProcessor(mesh_key(settings)), Cluster(settings, bootstrap), codec),
        Engine.keyed(StateProcessor(), Cluster(settings, bootstrap), codec),
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=e.run, kwargs={"until": stop.is_set}) for e in engines]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: engines[0].metrics.records_in >= 2, 60, "registrations")
        write = {"task_id": "t-9", "key": "brief", "value_json": '"draft 1"', "expected_version": 0}
        produce(
            settings,
            [
                Sent(
                    TASKS,
                    "t-9",
                    sealed(
                        codec,
                        agents["intake"],
                        "mesh.tasks.TaskEvent",
                        {
                            "task_id": "t-9",
                            "kind": "HANDED_OFF",
                            "actor": "intake",
                            "target": "research",
                        },
                        1,
                    ),
                ),
                Sent(
                    TASKS,
                    "t-9",
                    sealed(codec, agents["research"], "mesh.tasks.ContextWrite", write, 2),
                ),
            ],
        )
        wait_for(lambda: engines[1].metrics.records_in >= 2, 60, "the first task events")
        between = int(time.time() * 1000)
        time.sleep(0.05)
        produce(
            settings,
            [
                Sent(
                    TASKS,
                    "t-9",
                    sealed(
                        codec,
                        agents["research"],
                        "mesh.tasks.ContextWrite",
                        {**write, "value_json": '"draft 2"', "expected_version": 1},
                        3,
                    ),
                ),
                Sent(
                    TASKS,
                    "t-9",
                    sealed(
                        codec,
                        agents["research"],
                        "mesh.tasks.ContextWrite",
                        {**write, "value_json": '"stale"'},
                        4,
                    ),
                ),
            ],
        )
        wait_for(lambda: engines[1].metrics.records_in >= 4, 60, "the later task events")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        registry.close()

    now = run(["state", "show", "t-9"], settings)
    assert now.returncode == 0, now.stderr
    state = json.loads(now.stdout[: now.stdout.rindex("}") + 1])
    assert state["context"]["brief"] == {
        "value_json": '"draft 2"',
        "version": 2,
        "written_by": "research",
    }
    assert state["handoffs"][0]["to_agent"] == "research"
    assert "(1 refused events skipped" in now.stdout

    earlier = run(["state", "show", "t-9", "--as-of", str(between)], settings)
    assert earlier.returncode == 0, earlier.stderr
    assert json.loads(earlier.stdout)["context"]["brief"]["value_json"] == '"draft 1"'

    bad_time = run(["state", "show", "t-9", "--as-of", "yesterday-ish"], settings)
    assert bad_time.returncode == 2 and "is not a time" in bad_time.stderr

    listing = run(["agents", "ls"], settings)
    assert listing.returncode == 0 and "intake" in listing.stdout and "LIVE" in listing.stdout
    as_json = run(["agents", "ls", "--json"], settings)
    rows = {row["agent_id"]: row for row in map(json.loads, as_json.stdout.splitlines())}
    assert rows["intake"]["status"] == "LIVE" and rows["intake"]["last_heartbeat"].endswith("Z")
    shown = run(["agents", "show", "research"], settings)
    assert json.loads(shown.stdout)["depends_on_tools"] == ["web.search"]
    assert run(["agents", "show", "nobody"], settings).returncode == 1
    graph = run(["graph", "--format", "json"], settings)
    edges = json.loads(graph.stdout)["edges"]
    assert {"from": "intake", "to": "research", "kind": "agent", "seen": "declared"} in edges
    mermaid = run(["graph", "--format", "mermaid"], settings)
    assert mermaid.stdout.startswith("flowchart LR")
    assert run(["graph", "--format", "png"], settings).returncode == 2
