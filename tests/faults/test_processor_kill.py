"""Issue 14: a processor killed (SIGKILL) under load comes back at once and loses and doubles
nothing. Static group membership gives the restarted instance its partitions straight away,
instead of after the killed member's session times out (`bench/recovery.py` measures it)."""

from __future__ import annotations

import time
from collections import Counter

from mesh.settings import Settings
from tests.faults.processes import Watched
from tests.faults.test_broker_kill import TOTAL, Load, audited_so_far
from tests.integration.fleet import codec_for
from tests.integration.test_audit import audited, ensure_all, source_coordinates
from tests.integration.test_cli import run

#: Far below the 45 s a killed member held its partitions before static membership, and far
#: above the figure `bench/recovery.py` reports: a behaviour check, not a timing.
READY_WITHIN_S = 30.0


def group_total(settings: Settings) -> int:
    return audited_so_far(settings, f"{settings.topic_prefix}mesh-audit")


def test_a_killed_audit_processor_is_back_at_once_and_records_everything_once(
    settings: Settings,
) -> None:
    ensure_all(settings)
    first = Watched(settings, "audit")
    first.ready_after_s(120)
    load = Load(settings)
    load.start()
    while group_total(settings) < 600:
        time.sleep(0.05)
    first.kill()  # mid-stream: the load goes on
    second = Watched(settings, "audit")
    try:
        ready = second.ready_after_s(READY_WITHIN_S)
        time.sleep(1.2)  # the health file is touched every second once ready
        probed = run(["processors", "probe"], settings)
        assert probed.returncode == 0 and "ok: ready" in probed.stdout, probed.stdout
        load.join(300)
        assert load.failures == []
        deadline = time.monotonic() + 180
        while group_total(settings) != TOTAL:
            assert time.monotonic() < deadline, second.output()
            time.sleep(0.2)
    finally:
        code = second.stop()
    assert code == 0, second.output()
    assert ready < READY_WITHIN_S
    gone = run(["processors", "probe"], settings)
    assert gone.returncode == 1 and "not ready: no health file" in gone.stdout

    codec, registry = codec_for(settings)
    links = [link for _, _, link in audited(settings, codec.serde) if link is not None]
    registry.close()
    coordinates = Counter((x.source_topic, x.source_partition, x.source_offset) for x in links)
    assert [c for c, n in coordinates.items() if n > 1] == []
    assert set(coordinates) == source_coordinates(settings)  # as an uncrashed run records
