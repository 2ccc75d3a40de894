"""Does every link name a source record that exists, with the bytes it claims? (pure)

A chain proves its links were not changed after they were written; it cannot prove a link
recorded something real. A link forged with a well-formed hash names a source record: this
check reads the source partition back and compares each claim with what is there, wherever the
source is still retained. A claim below the source's low watermark was deleted by retention
and cannot be checked; it is counted, not failed.

The claims of one source partition arrive in audit order, which is source offset order (the
audit processor consumes each source partition in order), so the comparison is one merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Claim", "SourceReport", "compare_partition"]


class Claim(NamedTuple):
    """What one link says about its source record, and where the link is."""

    source_offset: int
    value_sha256: bytes
    audit_partition: int
    sequence: int

    def at(self) -> str:
        return f"audit partition {self.audit_partition}, sequence {self.sequence}"


@dataclass
class SourceReport:
    checked: int = 0
    not_retained: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: SourceReport) -> None:
        self.checked += other.checked
        self.not_retained += other.not_retained
        self.problems += other.problems


def compare_partition(
    topic: str,
    partition: int,
    claims: list[Claim],
    low: int,
    high: int,
    found: Iterable[tuple[int, bytes | None]],
) -> SourceReport:
    """Check ``claims`` (one source partition, offset order) against the records ``found``
    there, which are the committed records from the first claim still retained up to the last
    claim, in offset order; ``low``/``high`` are the partition's watermarks."""
    report = SourceReport()
    where = f"{topic}[{partition}]"
    records: Iterator[tuple[int, bytes | None]] = iter(found)
    current = next(records, None)
    for claim in sorted(claims):
        if claim.source_offset < low:
            report.not_retained += 1
            continue
        if claim.source_offset >= high:
            report.problems.append(
                f"{claim.at()}: names {where} offset {claim.source_offset}, past the end of "
                f"that partition ({high}): no such record was ever written"
            )
            continue
        while current is not None and current[0] < claim.source_offset:
            current = next(records, None)
        report.checked += 1
        if current is None or current[0] != claim.source_offset:
            report.problems.append(
                f"{claim.at()}: names {where} offset {claim.source_offset}, which holds no "
                "committed record (a transaction marker, an aborted write, or nothing)"
            )
            continue
        digest = hashlib.sha256(current[1] or b"").digest()
        if digest != claim.value_sha256:
            report.problems.append(
                f"{claim.at()}: the record at {where} offset {claim.source_offset} does not "
                "have the bytes the link claims (value_sha256 differs)"
            )
    return report
