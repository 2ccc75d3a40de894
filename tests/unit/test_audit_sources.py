"""The audit's claims against the source records they name (pure merge)."""

from __future__ import annotations

import hashlib

from mesh.domain.audit.sources import Claim, compare_partition


def claim(offset: int, value: bytes, sequence: int = 0) -> Claim:
    return Claim(offset, hashlib.sha256(value).digest(), 1, sequence)


SOURCE = [(10, b"a"), (11, b"b"), (13, b"d")]  # offset 12: a transaction marker


def test_claims_that_match_their_source_records_pass() -> None:
    report = compare_partition("t", 1, [claim(10, b"a"), claim(13, b"d")], 10, 14, SOURCE)
    assert (report.checked, report.not_retained, report.problems) == (2, 0, [])


def test_claims_on_deleted_records_are_counted_not_failed() -> None:
    report = compare_partition("t", 1, [claim(3, b"x"), claim(11, b"b")], 10, 14, SOURCE)
    assert (report.checked, report.not_retained, report.problems) == (1, 1, [])


def test_a_claim_with_other_bytes_is_named() -> None:
    report = compare_partition("t", 1, [claim(11, b"forged", 7)], 10, 14, SOURCE)
    assert report.problems == [
        "audit partition 1, sequence 7: the record at t[1] offset 11 does not have the bytes "
        "the link claims (value_sha256 differs)"
    ]


def test_a_claim_on_no_record_is_named() -> None:
    report = compare_partition("t", 1, [claim(12, b"c", 4), claim(99, b"z", 5)], 10, 14, SOURCE)
    assert report.problems == [
        "audit partition 1, sequence 5: names t[1] offset 99, past the end of that partition "
        "(14): no such record was ever written",
        "audit partition 1, sequence 4: names t[1] offset 12, which holds no committed record "
        "(a transaction marker, an aborted write, or nothing)",
    ]


def test_completeness_names_source_records_no_link_records() -> None:
    claims = [claim(10, b"a")]
    report = compare_partition("t", 1, claims, 10, 14, SOURCE, complete_until=14)
    assert (report.missing, report.first_missing) == (2, ["t[1] offset 11", "t[1] offset 13"])
    assert report.behind == [
        "t[1]: 2 records not in the audit (recorded up to offset 10, ends at 14)"
    ]
    whole = [claim(10, b"a"), claim(11, b"b"), claim(13, b"d")]
    done = compare_partition("t", 1, whole, 10, 14, SOURCE, complete_until=14)
    assert (done.missing, done.behind, done.problems) == (0, [], [])
    later = compare_partition("t", 1, claims, 10, 14, SOURCE, complete_until=11)
    assert later.missing == 0  # records after the stated end are not required
