from mesh.domain.topics import AUDIT, SCHEMAS, catalogue, config_conflicts, inbox_topic


def _spec(name: str):
    return next(s for s in catalogue() if s.name == name)


def test_catalogue_holds_every_design_topic() -> None:
    names = {spec.name for spec in catalogue()}
    assert names == {
        "mesh.registry.events.v1", "mesh.registry.v1", "mesh.tasks.v1", "mesh.state.v1",
        "mesh.telemetry.v1", "mesh.control.v2", "mesh.audit.v1", "mesh.dlq.v1", "_mesh_schemas",
        "mesh.audit.checkpoints.v1", "mesh.keys.v1", "mesh.policies.v1",
        "mesh.killswitch.fleet.v1", "mesh.approvals.v1", "mesh.throttles.v1", "mesh.drills.v1",
        "mesh.kpis.v1", "mesh.kpis.costs.v1",
    }  # fmt: skip
    assert inbox_topic("research").name == "mesh.inbox.research.v1"


def test_audit_keeps_everything_and_is_never_compacted() -> None:
    audit = _spec(AUDIT)
    assert audit.configs["cleanup.policy"] == "delete"
    assert audit.configs["retention.ms"] == "-1"


def test_compacted_topics_and_single_partition_registry() -> None:
    for name in ("mesh.registry.v1", "mesh.state.v1", SCHEMAS):
        assert _spec(name).configs["cleanup.policy"] == "compact"
    assert _spec(SCHEMAS).partitions == 1


def test_the_control_topic_is_kept_whole_so_nothing_compacts_a_halt_away() -> None:
    control = _spec("mesh.control.v2")
    assert control.configs["cleanup.policy"] == "delete"
    assert control.configs["retention.ms"] == "-1"
    problems = config_conflicts(control, {"cleanup.policy": "compact", "retention.ms": "-1"})
    assert problems == ["cleanup.policy='compact' but the catalogue requires 'delete'"]


def test_a_compacted_audit_topic_conflicts() -> None:
    problems = config_conflicts(_spec(AUDIT), {"cleanup.policy": "compact", "retention.ms": "-1"})
    assert problems == ["cleanup.policy='compact' but the catalogue requires 'delete'"]


def test_time_limited_audit_topic_conflicts() -> None:
    live = {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert config_conflicts(_spec(AUDIT), live) == [
        "retention.ms='604800000' but the catalogue requires '-1'"
    ]


def test_operators_may_tune_a_weeks_retention() -> None:
    live = {"cleanup.policy": "delete", "retention.ms": "2592000000"}
    assert config_conflicts(_spec("mesh.tasks.v1"), live) == []
