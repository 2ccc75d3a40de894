"""The audit chain: canonical links, verification, and the audit processor through the driver."""

from __future__ import annotations

import hashlib

import pytest

from mesh.domain.audit.chain import (
    GENESIS,
    KEEP_ORIGINAL_BYTES,
    Checkpoint,
    Link,
    checkpoint_bytes,
    link_bytes,
    next_link,
    signature_bytes,
)
from mesh.domain.audit.verify import Entry, verify_partition
from mesh.domain.identity import AgentKey
from processors.audit import AuditProcessor
from processors.runtime.records import OutRecord
from processors.testing import TestDriver

MESH = AgentKey.generate("mesh")


def signed(link: Link) -> Link:
    return link._replace(signature=MESH.sign(signature_bytes(link)))


def chain(n: int, partition: int = 0, *, sign: bool = True) -> list[Link]:
    """``n`` links as the audit processor writes them (``sign=False``: as before v2)."""
    links: list[Link] = []
    for i in range(n):
        head = links[-1] if links else None
        value = f"record {i}".encode()
        link = next_link(head, partition, "mesh.tasks.v1", partition, i * 2, 1000 + i, b"k", value)
        links.append(signed(link) if sign else link)
    return links


def entries(links: list[Link]) -> list[Entry]:
    return [Entry(offset, link) for offset, link in enumerate(links)]


def sealed(link: Link) -> Checkpoint:
    data = checkpoint_bytes(link.audit_partition, link.sequence, link.record_hash, 5)
    return Checkpoint(link.audit_partition, link.sequence, link.record_hash, 5, MESH.sign(data))


def test_links_chain_from_genesis_and_hash_their_canonical_form() -> None:
    links = chain(3)
    assert links[0].prev_hash == GENESIS and links[0].sequence == 0
    assert [link.prev_hash for link in links[1:]] == [link.record_hash for link in links[:-1]]
    assert links[2].record_hash == hashlib.sha256(link_bytes(links[2])).digest()
    assert links[1].value_sha256 == hashlib.sha256(b"record 1").digest()


def test_canonical_form_separates_fields_unambiguously() -> None:
    a = next_link(None, 0, "ab", 0, 1, 2, b"c", b"v")
    b = next_link(None, 0, "a", 0, 1, 2, b"bc", b"v")
    none_key = next_link(None, 0, "ab", 0, 1, 2, None, b"v")
    empty_key = next_link(None, 0, "ab", 0, 1, 2, b"", b"v")
    assert len({a.record_hash, b.record_hash, none_key.record_hash, empty_key.record_hash}) == 4


def test_an_intact_chain_verifies_and_is_sealed_by_its_checkpoint() -> None:
    links = chain(10)
    result = verify_partition(0, entries(links), [sealed(links[6])], MESH.public_bytes)
    assert result.problem is None
    assert result.records == 10 and result.head == links[-1]
    assert result.sealed_through == 6 and result.unsealed == 3


def first_problem(links: list[Link], **kwargs: object) -> str:
    result = verify_partition(0, entries(links), **kwargs)  # type: ignore[arg-type]
    assert result.problem is not None
    return str(result.problem)


def test_altered_original_bytes_are_named() -> None:
    links = chain(10)
    links[4] = links[4]._replace(original=b"record X")
    assert first_problem(links) == (
        "audit partition 0, offset 4, sequence 4: altered: the original bytes do not match "
        "value_sha256"
    )


def test_an_altered_field_breaks_the_record_hash() -> None:
    links = chain(10)
    links[4] = links[4]._replace(source_offset=999)
    assert "offset 4, sequence 4: altered: record_hash" in first_problem(links)


def test_an_altered_and_rehashed_record_breaks_the_next_link() -> None:
    links = chain(10)
    forged = links[4]._replace(original=b"evil", value_sha256=hashlib.sha256(b"evil").digest())
    links[4] = forged._replace(record_hash=forged.expected_hash())
    assert "offset 5, sequence 5: prev_hash does not match" in first_problem(links)


def test_a_rehashed_record_under_a_checkpoint_contradicts_it() -> None:
    links = chain(10, sign=False)  # links from before v2 rest on checkpoints alone
    checkpoint = sealed(links[4])
    forged = links[4]._replace(original=b"evil", value_sha256=hashlib.sha256(b"evil").digest())
    links[4] = forged._replace(record_hash=forged.expected_hash())
    problem = first_problem(links, checkpoints=[checkpoint], public_key=MESH.public_bytes)
    assert "sequence 4: differs from the signed checkpoint" in problem


def test_a_rehashed_signed_record_loses_its_signature() -> None:
    links = chain(10)
    forged = links[4]._replace(original=b"evil", value_sha256=hashlib.sha256(b"evil").digest())
    links[4] = forged._replace(record_hash=forged.expected_hash())
    result = verify_partition(0, entries(links), [], MESH.public_bytes)
    assert "sequence 4: not written by the audit processor (its signature" in str(result.foreign[0])
    assert "missing record: the chain jumps from 3 to 5" in str(result.problem)


def test_a_missing_record_is_named() -> None:
    links = chain(10)
    del links[5]
    assert first_problem(links) == (
        "audit partition 0, offset 5, sequence 6: missing record: the chain jumps from 4 to 6 "
        "(sequence 5 removed)"
    )


def test_a_reordered_record_is_named() -> None:
    links = chain(10)
    links[5], links[6] = links[6], links[5]
    assert first_problem(links) == (
        "audit partition 0, offset 5, sequence 6: reordered: sequence 6 comes before sequence 5"
    )


def test_a_record_written_by_someone_else_is_named() -> None:
    links = chain(10)
    head = links[5]
    forged = next_link(head, 0, "mesh.tasks.v1", 0, 77, 1, b"k", b"forged")
    links.insert(6, forged)
    assert first_problem(links) == (
        "audit partition 0, offset 6, sequence 6: not written by the audit processor: the chain "
        "continues from the record at offset 7 instead"
    )


def test_a_record_off_the_chain_is_named() -> None:
    links = chain(10)
    links.insert(6, next_link(links[2], 0, "mesh.tasks.v1", 0, 77, 1, b"k", b"forged"))
    assert first_problem(links) == (
        "audit partition 0, offset 6, sequence 3: not written by the audit processor: the chain "
        "skips over this record"
    )


def test_undecodable_bytes_are_not_audit_records() -> None:
    items = [*entries(chain(3)), Entry(3, None, "wrong magic byte")]
    result = verify_partition(0, items)
    assert str(result.problem) == (
        "audit partition 0, offset 3: not an audit record, so not written by the audit "
        "processor (wrong magic byte)"
    )


def test_deleted_head_of_the_log_is_missing_records() -> None:
    links = chain(10)[3:]
    assert "the chain starts at sequence 3, not 0" in first_problem(links)
    anchored = verify_partition(0, entries(links), from_start=False)
    assert anchored.problem is None and anchored.first_sequence == 3


def test_records_removed_from_the_end_are_caught_by_a_later_checkpoint() -> None:
    links = chain(10)
    checkpoint = sealed(links[9])
    problem = first_problem(links[:8], checkpoints=[checkpoint], public_key=MESH.public_bytes)
    assert "covers sequence 9 but the chain ends at 7" in problem


def test_a_checkpoint_with_a_bad_signature_is_refused() -> None:
    links = chain(4)
    checkpoint = sealed(links[2])._replace(head_hash=links[3].record_hash)
    problem = first_problem(links, checkpoints=[checkpoint], public_key=MESH.public_bytes)
    assert "checkpoint at sequence 2: signature does not match" in problem


def test_a_forged_link_is_left_out_and_the_chain_checked_past_it() -> None:
    links = chain(10)
    forged = next_link(links[5], 0, "mesh.tasks.v1", 0, 77, 1, b"k", b"forged")
    links.insert(6, forged)  # the processor, restored, wrote its own sequence 6 after it
    result = verify_partition(0, entries(links), [], MESH.public_bytes)
    assert result.problem is None and result.records == 10
    assert [str(p) for p in result.foreign] == [
        "audit partition 0, offset 6, sequence 6: not written by the audit processor "
        "(unsigned, and no checkpoint seals it); left out of the chain"
    ]


def test_a_link_signed_with_another_key_is_foreign() -> None:
    links = chain(4)
    other = AgentKey.generate("mesh")
    forged = next_link(links[-1], 0, "mesh.tasks.v1", 0, 9, 1, b"k", b"forged")
    links.append(forged._replace(signature=other.sign(signature_bytes(forged))))
    result = verify_partition(0, entries(links), [], MESH.public_bytes)
    assert "signature does not verify with the mesh's key" in str(result.foreign[0])


def test_links_from_before_signatures_are_proven_by_a_later_checkpoint() -> None:
    links = chain(6, sign=False)
    result = verify_partition(0, entries(links), [sealed(links[3])], MESH.public_bytes)
    assert [p.sequence for p in result.foreign] == [4, 5]  # after the last checkpoint
    assert verify_partition(0, entries(links), [sealed(links[5])], MESH.public_bytes).foreign == []


@pytest.fixture
def driver() -> TestDriver[Link]:
    return TestDriver(AuditProcessor(MESH, checkpoint_every_ms=1_000), partitions=3)


def test_audit_task_chains_each_partition_and_checkpoints_moved_heads(
    driver: TestDriver[Link],
) -> None:
    for i in range(30):
        driver.pipe("mesh.tasks.v1", f"task-{i % 7}", f"value {i}".encode())
    driver.pipe("mesh.telemetry.v1", "agent-1", b"\x00garbage")
    outputs = driver.outputs
    assert len(outputs) == 31 and all(o.topic == "mesh.audit.v1" for o in outputs)
    by_partition: dict[int, list[Link]] = {}
    for out in outputs:
        assert out.partition is not None and out.value is not None
        link = Link.from_record(out.partition, driver.serde.decode(out.value).record)
        assert link.source_partition == out.partition  # source partition p -> audit partition p
        by_partition.setdefault(out.partition, []).append(link)
    for partition, links in by_partition.items():
        assert verify_partition(partition, entries(links)).problem is None
    assert b"\x00garbage" in [link.original for links in by_partition.values() for link in links]

    ticks = driver.advance(1_000)
    assert sorted(o.partition for o in ticks) == sorted(by_partition)
    assert driver.advance(1_000) == []  # nothing moved: no new checkpoint
    checkpoint = Checkpoint.from_record(driver.serde.decode(ticks[0].value or b"").record)
    head = by_partition[checkpoint.audit_partition][-1]
    assert (checkpoint.sequence, checkpoint.head_hash) == (head.sequence, head.record_hash)


def test_a_restarted_audit_continues_each_chain_from_its_last_link(
    driver: TestDriver[Link],
) -> None:
    for i in range(12):
        driver.pipe("mesh.tasks.v1", f"task-{i % 5}", f"before {i}".encode())
    driver.restart()  # the store (the audit log) read back: each partition's last record
    for i in range(12):
        driver.pipe("mesh.tasks.v1", f"task-{i % 5}", f"after {i}".encode())
    by_partition: dict[int, list[Link]] = {}
    for out in driver.outputs:
        if out.topic == "mesh.audit.v1" and out.partition is not None and out.value is not None:
            link = Link.from_record(out.partition, driver.serde.decode(out.value).record)
            by_partition.setdefault(out.partition, []).append(link)
    assert sum(len(links) for links in by_partition.values()) == 24
    for partition, links in by_partition.items():
        assert [link.sequence for link in links] == list(range(len(links)))  # no fork, no gap
        assert verify_partition(partition, entries(links)).problem is None


def audit_links(driver: TestDriver[Link], partition: int) -> list[Link]:
    return [
        Link.from_record(partition, driver.serde.decode(out.value).record)
        for out in driver.outputs
        if out.topic == "mesh.audit.v1" and out.partition == partition and out.value
        if out.value != b"\x00junk"
    ]


def test_a_restarted_audit_never_adopts_or_seals_a_forged_link(
    driver: TestDriver[Link],
) -> None:
    for i in range(3):
        (out,) = driver.pipe("mesh.tasks.v1", "task-a", f"before {i}".encode())
    p = out.partition or 0
    head = audit_links(driver, p)[-1]
    forged = next_link(head, p, "mesh.tasks.v1", p, 99, 1, b"k", b"forged")
    value = driver.serde.encode("mesh.audit.AuditRecord", forged.to_record())
    driver.outputs.append(OutRecord("mesh.audit.v1", b"x", value, p, ()))
    driver.outputs.append(OutRecord("mesh.audit.v1", b"x", b"\x00junk", p, ()))

    driver.restart()
    assert len(driver.passed_over) == 2
    assert "sequence 3: unsigned, so not written by the audit processor" in driver.passed_over[1]
    driver.pipe("mesh.tasks.v1", "task-a", b"after")
    ticks = driver.advance(1_000)

    mine = audit_links(driver, p)[-1]
    assert (mine.sequence, mine.prev_hash) == (3, head.record_hash)  # continues its own head
    seals = [Checkpoint.from_record(driver.serde.decode(t.value or b"").record) for t in ticks]
    assert [(c.sequence, c.head_hash) for c in seals] == [(3, mine.record_hash)]
    checked = verify_partition(p, entries(audit_links(driver, p)), seals, MESH.public_bytes)
    assert checked.problem is None and [p.sequence for p in checked.foreign] == [3]


def test_a_log_from_before_signatures_is_adopted_once_from_its_newest_link() -> None:
    processor = AuditProcessor(MESH)
    links = chain(3, sign=False)
    adoption = processor.adopt(0, iter(reversed(list(enumerate(links)))))
    assert adoption.head == links[-1] and adoption.passed_over == []
    mixed = [*chain(2), *chain(2, sign=False)[1:]]
    adoption = processor.adopt(0, iter(reversed(list(enumerate(mixed)))))
    assert adoption.head == mixed[1] and len(adoption.passed_over) == 1


def test_a_record_too_large_to_keep_is_linked_by_its_hash_alone() -> None:
    """A dead letter of an oversize message can hold 8 MiB: its link keeps the SHA-256 and
    drops the bytes, so it fits the audit topic; the chain still covers which bytes they were."""
    big = b"x" * (KEEP_ORIGINAL_BYTES + 1)
    first = next_link(None, 0, "mesh.dlq.v1", 0, 0, 1, b"k", big)
    second = next_link(first, 0, "mesh.dlq.v1", 0, 1, 2, b"k", b"small")
    assert first.original is None and first.value_sha256 == hashlib.sha256(big).digest()
    assert second.original == b"small" and second.prev_hash == first.record_hash
    assert first.record_hash == first.expected_hash()
