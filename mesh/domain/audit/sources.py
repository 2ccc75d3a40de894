"""Does every link name a source record that exists, with the bytes it claims? (pure)

A chain proves its links were not changed after they were written; it cannot prove a link
recorded something real. A link forged with a well-formed hash names a source record: this
check reads the source partition back and compares each claim with what is there, wherever the
source is still retained. A claim below the source's low watermark was deleted by retention
and cannot be checked; it is counted, not failed.

Completeness is the other direction: a sound chain is not a complete log (an audit processor
that is down records nothing, and the chain stays sound). With a stated end per source
partition, every committed source record before it must be named by a link; what is not is
counted as missing, and how far the audit has got is reported as its lag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
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
    #: Completeness: source records (up to the stated end) no link records.
    missing: int = 0
    first_missing: list[str] = field(default_factory=list)
    #: Audit lag, one line per source partition whose end the audit has not reached.
    behind: list[str] = field(default_factory=list)

    def add(self, other: SourceReport) -> None:
        self.checked += other.checked
        self.not_retained += other.not_retained
        self.problems += other.problems
        self.missing += other.missing
        self.first_missing += other.first_missing[: max(0, 5 - len(self.first_missing))]
        self.behind += other.behind


def compare_partition(
    topic: str,
    partition: int,
    claims: list[Claim],
    low: int,
    high: int,
    found: Iterable[tuple[int, bytes | None]],
    complete_until: int | None = None,
) -> SourceReport:
    """Check ``claims`` (one source partition) against the committed records ``found`` there
    (offset order, covering every retained claim, and with ``complete_until`` every record
    from ``low`` up to it); ``low``/``high``: the partition's watermarks.

    With ``complete_until``, every source record below it must be recorded by a link, else it
    is counted as missing (completeness), and the partition's lag is reported."""
    report = SourceReport()
    where = f"{topic}[{partition}]"
    by_offset: dict[int, Claim] = {}
    for claim in claims:
        if claim.source_offset < low:
            report.not_retained += 1
        elif claim.source_offset >= high:
            report.problems.append(
                f"{claim.at()}: names {where} offset {claim.source_offset}, past the end of "
                f"that partition ({high}): no such record was ever written"
            )
        else:
            by_offset[claim.source_offset] = claim
    seen: set[int] = set()
    for offset, value in found:
        named = by_offset.get(offset)
        if named is None:
            if complete_until is not None and offset < complete_until:
                report.missing += 1
                if len(report.first_missing) < 5:
                    report.first_missing.append(f"{where} offset {offset}")
            continue
        seen.add(offset)
        report.checked += 1
        if hashlib.sha256(value or b"").digest() != named.value_sha256:
            report.problems.append(
                f"{named.at()}: the record at {where} offset {offset} does not have the bytes "
                "the link claims (value_sha256 differs)"
            )
    for offset in sorted(set(by_offset) - seen):
        report.checked += 1
        report.problems.append(
            f"{by_offset[offset].at()}: names {where} offset {offset}, which holds no "
            "committed record (a transaction marker, an aborted write, or nothing)"
        )
    if report.missing:
        last = max((c.source_offset for c in claims), default=None)
        recorded = "nothing recorded" if last is None else f"recorded up to offset {last}"
        report.behind.append(
            f"{where}: {report.missing} records not in the audit ({recorded}, ends at {high})"
        )
    return report
