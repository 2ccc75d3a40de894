"""The drill's verdict (pure): counts carried from drill to drill, overdue and failed said."""

from mesh.domain.drills import DrillResult, drill_health


def test_failures_count_in_a_row_and_a_pass_resets_them() -> None:
    first = DrillResult("c", 0, True, 60.0, 120.0, 80.0).after(None)
    assert (first.failures_in_row, first.last_success_ms) == (0, 0)
    failed = DrillResult("c", 60_000, False, 60.0, failure="no ack").after(first)
    again = DrillResult("c", 120_000, False, 60.0, failure="no ack").after(failed)
    assert (again.failures_in_row, again.last_success_ms) == (2, 0)
    assert DrillResult("c", 180_000, True, 60.0, 90.0, 70.0).after(again).failures_in_row == 0
    assert DrillResult.from_record(again.to_record()) == again


def test_health_is_false_with_no_drill_a_failed_one_or_an_overdue_one() -> None:
    passed = DrillResult("c", 0, True, 60.0, 120.0, 80.0).after(None)
    assert drill_health(None, 0) == (
        False,
        "no drill has run: the kill-switch has not proved it can halt",
    )
    ok, line = drill_health(passed, 30_000)
    assert ok and line.startswith("passed 30s ago: halt acknowledged in 120 ms")
    ok, line = drill_health(passed, 121_000)  # twice the schedule: overdue
    assert not ok and line.startswith("overdue")
    failed = DrillResult("c", 0, False, 60.0, failure="no ack").after(passed)
    ok, line = drill_health(failed, 1_000)
    assert not ok and line == "FAILED 1 in a row, last 1s ago: no ack"
