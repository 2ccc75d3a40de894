"""The registry processor through the test driver: no broker, a manual clock."""

import json
from dataclasses import replace

import pytest

from mesh.adapters.acks import live_targets
from mesh.adapters.kafka.partitioning import partition_for
from mesh.domain.agent_record import to_record
from mesh.domain.identity import AgentKey
from mesh.domain.keys import KeyDirectory, KeyStatement, KeyStatus, countersign, rotation_bytes
from mesh.domain.topics import DLQ, KEYS, REGISTRY, REGISTRY_EVENTS, TELEMETRY
from mesh.errors import RevokedKeyError, UnknownSenderError
from processors.registry import AgentStatus, RegistryProcessor
from processors.runtime.records import OutRecord, SourceRecord
from processors.testing import TestDriver

CARD = json.dumps({"name": "Research", "skills": [{"id": "research", "name": "Research"}]})


@pytest.fixture
def operator() -> AgentKey:
    return AgentKey.generate("operator:alice")


MESH = AgentKey.generate("mesh")


@pytest.fixture
def driver(operator: AgentKey) -> TestDriver:
    processor = RegistryProcessor(
        MESH, stale_after_ms=10_000, operator_keys={operator.agent_id: operator.public_bytes}
    )
    return TestDriver(processor, start_ms=1_000_000, keys=KeyDirectory(MESH.public_bytes))


@pytest.fixture
def research() -> AgentKey:
    return AgentKey.generate("research")


def register(driver: TestDriver, key: AgentKey, version: str = "1.0", **extra: object) -> None:
    body = {
        "agent_id": key.agent_id,
        "owner": "team-r",
        "version": version,
        "public_key": key.public_bytes,
        "agent_card_json": CARD,
        "depends_on_agents": ["drafting"],
        "depends_on_tools": ["web.search"],
        **extra,
    }
    driver.pipe(
        REGISTRY_EVENTS, key.agent_id, driver.seal(key, "mesh.registry.AgentRegistered", body)
    )


def heartbeat(driver: TestDriver, key: AgentKey, at_ms: int, seq: int = 1) -> bytes:
    value = driver.seal(
        key,
        "mesh.registry.Heartbeat",
        {"agent_id": key.agent_id, "instance_id": "i-1", "sequence": seq},
        at_ms=at_ms,
    )
    driver.pipe(REGISTRY_EVENTS, key.agent_id, value)
    return value


def test_registration_produces_the_agent_record(driver: TestDriver, research: AgentKey) -> None:
    register(driver, research)
    [(key, record)] = driver.read(REGISTRY)
    assert key == "research"
    assert record["status"] == "LIVE"
    assert record["public_key"] == research.public_bytes
    assert record["depends_on_agents"] == ["drafting"]
    assert record["last_heartbeat"] == 1_000_000
    assert json.loads(record["agent_card_json"])["skills"][0]["id"] == "research"


def test_heartbeats_move_forward_only(driver: TestDriver, research: AgentKey) -> None:
    register(driver, research)
    heartbeat(driver, research, 1_005_000, seq=2)
    heartbeat(driver, research, 1_003_000, seq=1)  # late, out of order
    state = driver.state("research")
    assert state is not None and state.last_heartbeat_ms == 1_005_000
    assert len(driver.read(REGISTRY)) == 2  # the late one changed nothing, so emitted nothing


def test_a_redelivered_record_is_a_no_op(driver: TestDriver, research: AgentKey) -> None:
    register(driver, research)
    value = heartbeat(driver, research, 1_002_000)
    before = len(driver.outputs)
    assert driver.pipe(REGISTRY_EVENTS, "research", value, offset=1) == []  # same offset
    driver.pipe(REGISTRY_EVENTS, "research", value)  # same message at a new offset
    assert len(driver.outputs) == before


def test_silence_marks_stale_and_a_heartbeat_revives(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    driver.advance(10_000)  # exactly at the limit: still live
    assert driver.state("research").status is AgentStatus.LIVE
    driver.advance(1_000)  # just over
    assert driver.state("research").status is AgentStatus.STALE
    assert driver.read(REGISTRY)[-1][1]["status"] == "STALE"
    driver.advance(5_000)
    assert len(driver.read(REGISTRY)) == 2  # stale once, not again every tick
    heartbeat(driver, research, driver.now_ms)
    assert driver.state("research").status is AgentStatus.LIVE


def test_same_id_with_another_key_is_refused_to_the_dlq(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    impostor = AgentKey.generate("research")
    register(driver, impostor)
    [letter] = driver.dead_letters()
    assert letter["reason_code"] == "registration_conflict"
    assert "already registered with another public key" in letter["reason"]
    assert letter["source_topic"] == REGISTRY_EVENTS
    assert driver.state("research").public_key == research.public_bytes


def test_retired_agent_may_register_a_new_key(driver: TestDriver, research: AgentKey) -> None:
    register(driver, research)
    driver.pipe(
        REGISTRY_EVENTS,
        "research",
        driver.seal(
            research, "mesh.registry.AgentRetired", {"agent_id": "research", "reason": "rotate"}
        ),
    )
    assert driver.state("research").status is AgentStatus.RETIRED
    rotated = AgentKey.generate("research")
    register(driver, rotated, version="2.0")
    state = driver.state("research")
    assert state.public_key == rotated.public_bytes and state.status is AgentStatus.LIVE
    assert driver.dead_letters() == []


def test_unregistered_forged_and_misaddressed_events_are_dead_lettered(
    driver: TestDriver, research: AgentKey
) -> None:
    heartbeat(driver, research, 1_000_001)  # never registered
    register(driver, research)
    forger = AgentKey.generate("research")
    heartbeat(driver, forger, 1_000_002)  # signed with the wrong key
    driver.pipe(
        REGISTRY_EVENTS,
        "someone-else",
        driver.seal(
            research,
            "mesh.registry.Heartbeat",
            {"agent_id": "research", "instance_id": "i", "sequence": 1},
        ),
    )
    driver.pipe(REGISTRY_EVENTS, "research", b"\x00\x00\x00\x7f\x7fjunk")
    codes = [d["reason_code"] for d in driver.dead_letters()]
    assert codes == ["unknown_sender", "bad_signature", "rejected", "unknown_schema_id"]
    assert driver.dead_letters()[-1]["original"] == b"\x00\x00\x00\x7f\x7fjunk"


def test_certification_needs_an_operator_key(
    driver: TestDriver, research: AgentKey, operator: AgentKey
) -> None:
    register(driver, research)
    body = {
        "agent_id": "research",
        "agent_version": "1.0",
        "level": "production",
        "certified_by": operator.agent_id,
    }
    driver.pipe(
        REGISTRY_EVENTS, "research", driver.seal(research, "mesh.registry.AgentCertified", body)
    )  # self-certified
    driver.pipe(
        REGISTRY_EVENTS, "research", driver.seal(operator, "mesh.registry.AgentCertified", body)
    )
    assert driver.state("research").certifications == ("production",)
    assert [d["reason_code"] for d in driver.dead_letters()] == ["unknown_sender"]


def test_a_refused_certification_names_its_gates_and_a_new_version_lapses_a_grant(
    driver: TestDriver, research: AgentKey, operator: AgentKey
) -> None:
    register(driver, research)
    gates = [
        {"gate": "rollback_plan", "required": True, "passed": False},
        {"gate": "ownership", "required": True, "passed": True},
        {"gate": "extra", "required": False, "passed": False},
    ]
    verdict = {
        "agent_id": "research", "agent_version": "1.0", "level": "production",
        "certified_by": "cfo", "granted": False, "gates_json": json.dumps(gates),
    }  # fmt: skip
    subject = "mesh.registry.AgentCertified"
    driver.pipe(REGISTRY_EVENTS, "research", driver.seal(operator, subject, verdict))
    refused = driver.state("research")
    assert (refused.certifications, refused.gates_failing) == ((), ("rollback_plan",))
    granted = {**verdict, "granted": True, "gates_json": "[]", "expires_at": 5_000}
    driver.pipe(REGISTRY_EVENTS, "research", driver.seal(operator, subject, granted))
    state = driver.state("research")
    assert state.certifications == ("production",)
    assert (state.certified_until_ms, state.certified_by, state.gates_failing) == (5_000, "cfo", ())
    assert state.certified_versions == ("1.0",)
    register(driver, research, version="1.1")  # a new version starts uncertified
    bumped = driver.state("research")
    assert (bumped.certifications, bumped.certified_until_ms) == ((), None)
    assert bumped.certified_versions == ("1.0",)  # what it can roll back to
    driver.pipe(REGISTRY_EVENTS, "research", driver.seal(operator, subject, granted))
    assert driver.state("research").certifications == ()  # a verdict on 1.0 says nothing of 1.1


def test_observed_traffic_extends_the_dependency_map(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    for kind, name, peer in (
        ("TOOL_CALL", "web.search", None),
        ("MESSAGE_SENT", "send", "review"),
        ("TOOL_CALL", "web.search", None),
    ):
        driver.pipe(
            TELEMETRY,
            "research",
            driver.seal(
                research,
                "mesh.telemetry.TelemetryEvent",
                {"agent_id": "research", "kind": kind, "name": name, "peer": peer},
            ),
        )
    state = driver.state("research")
    assert state.observed_tools == ("web.search",)
    assert state.observed_agents == ("review",)


def test_dead_letters_go_to_the_dlq_topic(driver: TestDriver) -> None:
    driver.pipe(REGISTRY_EVENTS, "x", b"plain text")
    assert [r.topic for r in driver.outputs] == [DLQ]


def report(driver: TestDriver, key: AgentKey, kind: str, name: str = "spend_per_minute") -> None:
    body = {"agent_id": key.agent_id, "kind": kind, "name": name, "peer": None}
    driver.pipe(TELEMETRY, key.agent_id, driver.seal(key, "mesh.telemetry.TelemetryEvent", body))


def test_a_halt_acknowledged_by_the_sidecar_shows_halted_until_its_resume(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    report(driver, research, "HALT_ACK")
    assert driver.state("research").status is AgentStatus.HALTED
    assert driver.read(REGISTRY)[-1][1]["status"] == "HALTED"
    heartbeat(driver, research, driver.now_ms + 1_000)  # still heartbeating: still halted
    register(driver, research)  # a restart: still halted
    driver.advance(60_000)  # silent: halted, not stale
    assert driver.state("research").status is AgentStatus.HALTED
    report(driver, research, "RESUME_ACK", "resume")
    assert driver.state("research").status is AgentStatus.LIVE
    assert driver.read(REGISTRY)[-1][1]["status"] == "LIVE"


def test_acknowledgements_never_revive_a_retired_or_stale_agent(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    driver.advance(11_000)
    report(driver, research, "RESUME_ACK", "resume")  # resumed, but still not heartbeating
    assert driver.state("research").status is AgentStatus.STALE
    retire = {"agent_id": "research", "reason": "done"}
    driver.pipe(
        REGISTRY_EVENTS, "research", driver.seal(research, "mesh.registry.AgentRetired", retire)
    )
    report(driver, research, "HALT_ACK")
    assert driver.state("research").status is AgentStatus.RETIRED


def test_a_batch_writes_each_changed_agent_once_with_its_last_state(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    core, partition = driver.core, partition_for(b"research", driver.partitions)
    for n in range(1, 6):  # five heartbeats inside one transaction
        body = {"agent_id": "research", "instance_id": "i", "sequence": n}
        at = driver.now_ms + n * 1_000
        value = driver.seal(research, "mesh.registry.Heartbeat", body, at_ms=at)
        record = SourceRecord(REGISTRY_EVENTS, partition, 100 + n, at, b"research", value)
        assert core.handle(record, at) == []  # nothing written yet
    [written] = core.flush()
    assert written.topic == REGISTRY and written.key == b"research"
    assert driver.serde.decode(written.value or b"").record["last_heartbeat"] == at
    assert core.flush() == []


def test_an_agent_that_registers_while_the_fleet_is_halted_is_halted_from_the_start(
    operator: AgentKey, research: AgentKey
) -> None:
    fleet_halt = {"command_id": "h-1", "action": "HALT", "scope": "FLEET", "target": "*",
                  "affected_agents": [], "rule": "operator", "reason": "drill",
                  "evidence": [], "requested_by": "operator:alice"}  # fmt: skip
    processor = RegistryProcessor(MESH, operator_keys={operator.agent_id: operator.public_bytes})
    driver = TestDriver(processor, start_ms=1_000_000, halts={"*": fleet_halt})
    register(driver, research)
    [(key, record)] = driver.read(REGISTRY)
    assert (key, record["status"]) == ("research", "HALTED")
    driver.tables.halts.clear()  # the fleet is resumed: a new registration is LIVE
    rival = AgentKey.generate("drafting")
    register(driver, rival)
    assert driver.read(REGISTRY)[-1][1]["status"] == "LIVE"


# -- the key directory (issue 19) ------------------------------------------------------------


def statements(driver: TestDriver) -> list[tuple[str, int, str, bytes]]:
    return [(key or "", r["serial"], r["status"], r["public_key"]) for key, r in driver.read(KEYS)]


def rotate(driver: TestDriver, signer: AgentKey, new: AgentKey, agent_id: str = "research") -> None:
    body = {
        "agent_id": agent_id,
        "new_public_key": new.public_bytes,
        "proof": new.sign(rotation_bytes(agent_id, new.public_bytes)),
        "reason": "scheduled",
    }
    driver.pipe(REGISTRY_EVENTS, agent_id, driver.seal(signer, "mesh.registry.KeyRotated", body))


def revoke(driver: TestDriver, operator: AgentKey, key: AgentKey) -> None:
    body = {"agent_id": key.agent_id, "public_key": key.public_bytes, "reason": "leaked"}
    driver.pipe(
        REGISTRY_EVENTS, key.agent_id, driver.seal(operator, "mesh.registry.KeyRevoked", body)
    )


def test_the_registry_countersigns_each_key_once(driver: TestDriver, research: AgentKey) -> None:
    register(driver, research)
    heartbeat(driver, research, 1_001_000)
    register(driver, research)  # a restart: same key, nothing new to vouch for
    assert statements(driver) == [("research", 1, "ACTIVE", research.public_bytes)]
    assert driver.tables.keys.key_for("research") == research.public_bytes
    state = driver.state("research")
    assert state.key_serial == 1 and state.key_signature == driver.read(KEYS)[0][1]["signature"]


def test_a_rotation_signed_by_the_current_key_moves_the_agent_to_the_new_key(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    new = AgentKey.generate("research")
    rotate(driver, research, new)
    assert statements(driver)[-1] == ("research", 2, "ACTIVE", new.public_bytes)
    heartbeat(driver, research, 1_002_000)  # the old key no longer counts
    heartbeat(driver, new, 1_003_000)
    assert [d["reason_code"] for d in driver.dead_letters()] == ["bad_signature"]
    assert driver.state("research").last_heartbeat_ms == 1_003_000


def test_a_rotation_needs_the_new_keys_proof_and_the_right_signer(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    stranger = AgentKey.generate("research")
    rotate(driver, stranger, AgentKey.generate("research"))  # not signed by the current key
    body = {"agent_id": "research", "new_public_key": stranger.public_bytes,
            "proof": research.sign(b"not a proof"), "reason": "x"}  # fmt: skip
    driver.pipe(
        REGISTRY_EVENTS, "research", driver.seal(research, "mesh.registry.KeyRotated", body)
    )
    assert [d["reason_code"] for d in driver.dead_letters()] == ["bad_signature", "bad_signature"]
    assert len(statements(driver)) == 1


def test_a_revoked_key_quarantines_the_agent_until_an_operator_rotates_it(
    driver: TestDriver, research: AgentKey, operator: AgentKey
) -> None:
    register(driver, research)
    revoke(driver, research, research)  # an agent cannot revoke (or lift) anything itself
    revoke(driver, operator, research)
    assert driver.state("research").status is AgentStatus.QUARANTINED
    assert statements(driver)[-1] == ("research", 2, "REVOKED", research.public_bytes)
    with pytest.raises(RevokedKeyError):
        driver.tables.keys.key_for("research")

    heartbeat(driver, research, 1_001_000)
    register(driver, research)
    rotate(driver, research, AgentKey.generate("research"))  # the revoked key cannot rotate
    codes = [d["reason_code"] for d in driver.dead_letters()]
    assert codes == ["unknown_sender", "revoked_key", "revoked_key", "revoked_key"]

    new = AgentKey.generate("research")
    rotate(driver, operator, new)
    assert driver.state("research").status is AgentStatus.LIVE
    assert statements(driver)[-1] == ("research", 3, "ACTIVE", new.public_bytes)


def test_a_changelog_record_the_mesh_did_not_countersign_is_not_restored(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    forger = AgentKey.generate("research")
    forged = replace(driver.state("research"), public_key=forger.public_bytes)
    value = driver.serde.encode("mesh.registry.AgentRecord", to_record(forged))
    partition = partition_for(b"research", driver.partitions)
    driver.outputs.append(OutRecord(REGISTRY, b"research", value, partition))
    driver.restart()
    assert driver.state("research").public_key == research.public_bytes
    heartbeat(driver, forger, 1_002_000)
    assert [d["reason_code"] for d in driver.dead_letters()] == ["bad_signature"]


def test_the_directory_keeps_the_newest_statement_the_mesh_signed() -> None:
    directory = KeyDirectory(MESH.public_bytes)
    old, new = AgentKey.generate("a"), AgentKey.generate("a")
    first = countersign(KeyStatement("a", old.public_bytes, 1, KeyStatus.ACTIVE, "", 1), MESH)
    second = countersign(KeyStatement("a", new.public_bytes, 2, KeyStatus.ACTIVE, "", 2), MESH)
    assert directory.apply(first) is None and directory.apply(second) is None
    assert "a replay; ignored" in (directory.apply(first) or "")
    forged = KeyStatement("a", old.public_bytes, 9, KeyStatus.ACTIVE, "", 3, b"\x00" * 64)
    assert "forged" in (directory.apply(forged) or "")
    assert directory.key_for("a") == new.public_bytes
    with pytest.raises(UnknownSenderError, match="no key countersigned by the mesh"):
        directory.key_for("b")


def test_the_registry_tracks_each_heartbeating_instance_until_it_falls_silent(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    for instance, at in (("i-1", 1_001_000), ("i-2", 1_002_000), ("i-1", 1_009_000)):
        value = driver.seal(
            research,
            "mesh.registry.Heartbeat",
            {"agent_id": "research", "instance_id": instance, "sequence": at},
            at_ms=at,
        )
        driver.pipe(REGISTRY_EVENTS, "research", value)
    assert driver.state("research").instances == (("i-1", 1_009_000), ("i-2", 1_002_000))
    driver.advance(13_500)  # i-2 silent for more than the stale period (10 s), i-1 not
    state = driver.state("research")
    assert state.instances == (("i-1", 1_009_000),) and state.status is AgentStatus.LIVE
    targets = live_targets({"research": state, "gone": replace(state, agent_id="gone",
                            status=AgentStatus.RETIRED)}, ["research", "gone"])  # fmt: skip
    assert targets == ["research/i-1"]


def test_an_agent_retires_only_when_its_last_instance_leaves(
    driver: TestDriver, research: AgentKey
) -> None:
    register(driver, research)
    for instance in ("i-1", "i-2"):
        beat = {"agent_id": "research", "instance_id": instance, "sequence": 1}
        driver.pipe(
            REGISTRY_EVENTS, "research", driver.seal(research, "mesh.registry.Heartbeat", beat)
        )

    def leave(instance: str) -> None:
        body = {"agent_id": "research", "reason": "stopped", "instance_id": instance}
        driver.pipe(
            REGISTRY_EVENTS, "research", driver.seal(research, "mesh.registry.AgentRetired", body)
        )

    leave("i-2")  # one replica stops: the agent runs on
    state = driver.state("research")
    assert state.status is AgentStatus.LIVE and [i for i, _ in state.instances] == ["i-1"]
    leave("i-1")  # the last one
    assert driver.state("research").status is AgentStatus.RETIRED
    assert statements(driver)[-1][2] == "RETIRED"


def test_only_the_mesh_key_registers_a_mesh_process(driver: TestDriver) -> None:
    impostor = AgentKey.generate("mesh.killswitch")  # would fake the kill-switch's liveness
    register(driver, impostor)
    [letter] = driver.dead_letters()
    assert letter["reason_code"] == "identity" and "the mesh's own processes" in letter["reason"]
    register(driver, AgentKey.from_seed("mesh.killswitch", MESH.seed()))
    assert driver.state("mesh.killswitch").status is AgentStatus.LIVE
