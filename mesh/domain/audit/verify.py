"""Verify one audit partition's chain, streaming, and name the first bad record (pure).

Checks, for every record in offset order:

1. it decodes as an ``AuditRecord`` (else: not written by the audit processor);
2. its ``record_hash`` is the SHA-256 of its canonical form (else: altered);
3. ``value_sha256`` is the SHA-256 of ``original`` (else: the original bytes were altered);
4. it follows the head: ``sequence`` is one more and ``prev_hash`` is the head's hash. A break
   is classified with one record of look-ahead: a record the chain skips over was inserted by
   someone else; a sequence gap is a missing record; a lower sequence is a reordering;
5. every signed checkpoint's signature holds and matches the chain at its sequence, and a
   checkpoint beyond the end of the chain means records were removed from the end.

With the mesh's public key, a link must also carry the mesh key's signature (``AuditRecord``
v2), or, written before v2 (unsigned, and before the partition's first signed link), lie at or
before a signed checkpoint. A link that does neither is *foreign*: someone else wrote it. It
is named in ``foreign`` and left out of the chain, so the chain is checked on past it (the
audit processor, restored, carries on from its own head).

Without ``from_start`` (a time-bounded range), the first record is taken as the anchor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from mesh.domain.audit.chain import (
    GENESIS,
    Checkpoint,
    Link,
    checkpoint_bytes,
    signature_problem,
)
from mesh.domain.identity import verify_signature
from mesh.errors import BadSignatureError

__all__ = ["Entry", "PartitionResult", "Problem", "verify_partition"]


class Entry(NamedTuple):
    """One record of the audit topic: its offset and the decoded link, or why it did not decode."""

    offset: int
    link: Link | None
    error: str = ""


class _Linked(NamedTuple):
    """An entry that decoded and is intact in itself: its link is there."""

    offset: int
    link: Link


class Problem(NamedTuple):
    partition: int
    offset: int
    sequence: int | None
    reason: str

    def __str__(self) -> str:
        at = f"audit partition {self.partition}, offset {self.offset}"
        if self.sequence is not None:
            at += f", sequence {self.sequence}"
        return f"{at}: {self.reason}"


@dataclass
class PartitionResult:
    partition: int
    records: int = 0
    head: Link | None = None
    head_offset: int = -1
    first_sequence: int | None = None
    sealed_through: int | None = None  # highest sequence a valid checkpoint covers
    problem: Problem | None = None
    #: Links not written by the audit processor, left out of the chain.
    foreign: list[Problem] = field(default_factory=list)
    checkpoints_checked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def unsealed(self) -> int:
        if self.head is None:
            return 0
        return self.head.sequence - (-1 if self.sealed_through is None else self.sealed_through)


def verify_partition(
    partition: int,
    entries: Iterable[Entry],
    checkpoints: Iterable[Checkpoint] = (),
    public_key: bytes | None = None,
    *,
    from_start: bool = True,
    complete: bool = True,
) -> PartitionResult:
    """Check ``entries`` (one partition, offset order); stops at the first problem."""
    result = PartitionResult(partition)
    sealed = _checked_checkpoints(partition, checkpoints, public_key, result)
    if result.problem is not None:
        return result
    suspect: _Linked | None = None
    last_sealed = max(sealed, default=-1)
    signing = False  # a signed link was seen: from here on, every link must be signed
    for raw in entries:
        entry = _intrinsic(partition, raw)
        if isinstance(entry, Problem):
            result.problem = entry
            return result
        if public_key is not None:
            foreign = _foreign(partition, entry, public_key, -1 if signing else last_sealed)
            if foreign is not None:
                result.foreign.append(foreign)
                continue
            signing = signing or bool(entry.link.signature)
        if suspect is not None and result.head is not None:
            result.problem = _resolve(partition, suspect, entry, result.head, result.head_offset)
            return result
        if result.head is not None and not _in_order(entry, result.head):
            suspect = entry  # judged with the next record (see the module docstring)
            continue
        problem = _start(partition, entry, from_start) if result.head is None else None
        problem = problem or _against_checkpoint(partition, entry, sealed)
        if problem is not None:
            result.problem = problem
            return result
        _accept(result, entry, sealed)
    if suspect is not None and result.head is not None:
        result.problem = _break(partition, suspect, result.head)
        return result
    if complete:
        result.problem = _beyond_end(partition, sealed, result)
    return result


def _checked_checkpoints(
    partition: int,
    checkpoints: Iterable[Checkpoint],
    public_key: bytes | None,
    result: PartitionResult,
) -> dict[int, Checkpoint]:
    sealed: dict[int, Checkpoint] = {}
    for cp in checkpoints:
        if public_key is not None:
            data = checkpoint_bytes(cp.audit_partition, cp.sequence, cp.head_hash, cp.at_ms)
            try:
                verify_signature(public_key, cp.signature, data, "the mesh")
            except BadSignatureError as exc:
                result.problem = Problem(
                    partition, -1, cp.sequence, f"checkpoint at sequence {cp.sequence}: {exc}"
                )
                return sealed
        sealed[cp.sequence] = cp
        result.checkpoints_checked += 1
    return sealed


def _intrinsic(partition: int, entry: Entry) -> _Linked | Problem:
    link = entry.link
    if link is None:
        return Problem(
            partition,
            entry.offset,
            None,
            f"not an audit record, so not written by the audit processor ({entry.error})",
        )
    if link.record_hash != link.expected_hash():
        return Problem(
            partition,
            entry.offset,
            link.sequence,
            "altered: record_hash does not match the record's canonical form",
        )
    if link.original is not None and hashlib.sha256(link.original).digest() != link.value_sha256:
        return Problem(
            partition,
            entry.offset,
            link.sequence,
            "altered: the original bytes do not match value_sha256",
        )
    return _Linked(entry.offset, link)


def _foreign(partition: int, entry: _Linked, public_key: bytes, last_sealed: int) -> Problem | None:
    link = entry.link
    problem = signature_problem(link, public_key)
    if problem is None or (problem == "unsigned" and link.sequence <= last_sealed):
        return None
    return Problem(
        partition,
        entry.offset,
        link.sequence,
        f"not written by the audit processor ({problem}, and no checkpoint seals it); "
        "left out of the chain",
    )


def _start(partition: int, entry: _Linked, from_start: bool) -> Problem | None:
    link = entry.link
    if from_start and (link.sequence != 0 or link.prev_hash != GENESIS):
        return Problem(
            partition,
            entry.offset,
            link.sequence,
            f"the chain starts at sequence {link.sequence}, not 0: the records before it "
            "are missing (deleted from the topic)",
        )
    return None


def _in_order(entry: _Linked, head: Link) -> bool:
    link = entry.link
    return link.sequence == head.sequence + 1 and link.prev_hash == head.record_hash


def _accept(result: PartitionResult, entry: _Linked, sealed: dict[int, Checkpoint]) -> None:
    link = entry.link
    if link.sequence in sealed:
        result.sealed_through = link.sequence
    result.records += 1
    result.head = link
    result.head_offset = entry.offset
    if result.first_sequence is None:
        result.first_sequence = link.sequence


def _resolve(
    partition: int, suspect: _Linked, entry: _Linked, head: Link, head_offset: int
) -> Problem:
    """Decide what the out-of-chain ``suspect`` was, given the record after it."""
    s, n = suspect.link, entry.link
    if (s.sequence, s.prev_hash) == (head.sequence, head.prev_hash) and (
        n.prev_hash == s.record_hash
    ):  # two records claim one place and the chain goes on from the second
        return Problem(
            partition,
            head_offset,
            head.sequence,
            "not written by the audit processor: the chain continues from the record at "
            f"offset {suspect.offset} instead",
        )
    if n.sequence == head.sequence + 1 and n.prev_hash == head.record_hash:
        if s.sequence == head.sequence + 2:
            return Problem(
                partition,
                suspect.offset,
                s.sequence,
                f"reordered: sequence {s.sequence} comes before sequence {n.sequence}",
            )
        return Problem(
            partition,
            suspect.offset,
            s.sequence,
            "not written by the audit processor: the chain skips over this record",
        )
    return _break(partition, suspect, head)


def _break(partition: int, suspect: _Linked, head: Link) -> Problem:
    s = suspect.link
    expected = head.sequence + 1
    if s.sequence > expected:
        missing = (
            f"sequence {expected}"
            if s.sequence == expected + 1
            else f"sequences {expected}..{s.sequence - 1}"
        )
        reason = (
            f"missing record: the chain jumps from {head.sequence} to {s.sequence} "
            f"({missing} removed)"
        )
    elif s.sequence < expected:
        reason = f"reordered or duplicated: sequence {s.sequence} after {head.sequence}"
    else:
        reason = (
            "prev_hash does not match the previous record's hash: the previous record was "
            "altered and re-hashed, or this one was forged"
        )
    return Problem(partition, suspect.offset, s.sequence, reason)


def _against_checkpoint(
    partition: int, entry: _Linked, sealed: dict[int, Checkpoint]
) -> Problem | None:
    link = entry.link
    cp = sealed.get(link.sequence)
    if cp is None or cp.head_hash == link.record_hash:
        return None
    return Problem(
        partition,
        entry.offset,
        link.sequence,
        "differs from the signed checkpoint at this sequence: the chain was rewritten",
    )


def _beyond_end(
    partition: int, sealed: dict[int, Checkpoint], result: PartitionResult
) -> Problem | None:
    last = -1 if result.head is None else result.head.sequence
    beyond = [seq for seq in sealed if seq > last]
    if not beyond:
        return None
    return Problem(
        partition,
        -1,
        max(beyond),
        f"a signed checkpoint covers sequence {max(beyond)} but the chain ends at {last}: "
        "records were removed from the end",
    )
