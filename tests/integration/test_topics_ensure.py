"""Topic bootstrap against the real broker: creation, idempotence, conflict refusal."""

import pytest
from confluent_kafka.admin import NewTopic

from mesh.adapters.kafka.admin import TopicAdmin
from mesh.domain.topics import AUDIT, catalogue
from mesh.errors import TopicConfigConflictError
from mesh.settings import Cluster, Settings


def test_ensure_creates_every_topic_with_its_configs(settings: Settings) -> None:
    admin = TopicAdmin(Cluster.of(settings))
    report = admin.ensure()
    names = [spec.full_name(settings.topic_prefix) for spec in catalogue()]
    assert sorted(report.created) == sorted(names)
    live = admin.topic_partitions()
    assert live[f"{settings.topic_prefix}_mesh_schemas"] == 1
    assert live[f"{settings.topic_prefix}mesh.tasks.v1"] == settings.partitions
    configs = admin.topic_configs(
        [f"{settings.topic_prefix}{AUDIT}", f"{settings.topic_prefix}mesh.state.v1"]
    )
    assert configs[f"{settings.topic_prefix}{AUDIT}"]["retention.ms"] == "-1"
    assert configs[f"{settings.topic_prefix}{AUDIT}"]["cleanup.policy"] == "delete"
    assert configs[f"{settings.topic_prefix}mesh.state.v1"]["cleanup.policy"] == "compact"


def test_ensure_is_idempotent(settings: Settings) -> None:
    admin = TopicAdmin(Cluster.of(settings))
    admin.ensure()
    second = admin.ensure()
    assert second.created == []
    assert len(second.existing) == len(catalogue())


def test_a_compacted_audit_topic_is_refused_and_nothing_is_created(settings: Settings) -> None:
    admin = TopicAdmin(Cluster.of(settings))
    audit = f"{settings.topic_prefix}{AUDIT}"
    admin._admin.create_topics(
        [NewTopic(audit, settings.partitions, 1, config={"cleanup.policy": "compact"})]
    )[audit].result()
    admin._await_leaders([audit])  # metadata lags a fresh topic briefly
    with pytest.raises(TopicConfigConflictError) as caught:
        admin.ensure()
    assert f"{audit}: cleanup.policy='compact' but the catalogue requires 'delete'" in str(
        caught.value
    )
    assert set(admin.topic_partitions()) & {
        s.full_name(settings.topic_prefix) for s in catalogue()
    } == {audit}


def test_a_partition_count_mismatch_is_refused(settings: Settings) -> None:
    admin = TopicAdmin(Cluster.of(settings))
    tasks = f"{settings.topic_prefix}mesh.tasks.v1"
    admin._admin.create_topics([NewTopic(tasks, settings.partitions + 1, 1)])[tasks].result()
    with pytest.raises(TopicConfigConflictError, match="co-partitioned topics must agree"):
        admin.ensure()


def test_a_topic_that_appears_during_ensure_is_checked_like_an_existing_one(
    settings: Settings,
) -> None:
    admin = TopicAdmin(Cluster.of(settings))
    audit = f"{settings.topic_prefix}{AUDIT}"
    spec = next(s for s in catalogue() if s.name == AUDIT)
    admin._admin.create_topics(
        [NewTopic(audit, settings.partitions, 1, config={"cleanup.policy": "compact"})]
    )[audit].result()
    raced = admin._create([admin._new_topic(audit, spec)])
    assert raced == [audit]
    admin._await_leaders(raced)
    with pytest.raises(TopicConfigConflictError, match="created concurrently"):
        admin._refuse_raced({audit: spec})
