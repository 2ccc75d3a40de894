"""`mesh audit verify|replay|export`: check, read back and hand over the audit log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from cli.common import cluster, console, parse_time, settings
from mesh.adapters.audit.export import decoded_view, export_line, involves
from mesh.adapters.audit.log import AuditLog, Claims, Window, in_source_order, verify_log
from mesh.adapters.audit.sources import audited_ends, check_sources
from mesh.adapters.keyfiles import mesh_anchor
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.audit.chain import Link
from mesh.domain.audit.sources import SourceReport
from mesh.domain.audit.verify import PartitionResult
from mesh.domain.identity import PublicKeys
from mesh.errors import ConfigError
from mesh.settings import Settings
from processors.audit import AUDITED

app = typer.Typer(help="The hash-chained audit log: verify, replay, export.")

_FROM = typer.Option(None, "--from", help="ISO-8601 time or epoch ms (when recorded).")
_TO = typer.Option(None, "--to", help="ISO-8601 time or epoch ms (when recorded).")


def _window(start: str | None, end: str | None) -> Window:
    window = Window(
        parse_time(start, "--from") if start else None, parse_time(end, "--to") if end else None
    )
    if None not in window and window.from_ms > window.to_ms:  # type: ignore[operator]
        raise typer.BadParameter("--from is after --to", param_hint="--from")
    return window


def _public_key(current: Settings, text: str | None) -> bytes:
    """The mesh's public key to verify checkpoints with: --public-key, else the trust anchor
    (MESH_CONTROL_SIGNERS, or this host's key file); never a key minted here."""
    if text is None:
        return mesh_anchor(current)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise typer.BadParameter("give the mesh's 32-byte Ed25519 key as 64 hex digits")
    return raw


class _Session:
    """The log and a serde for one command, closed at the end."""

    def __init__(self) -> None:
        self.settings = settings()
        where = cluster(self.settings)
        self.registry = open_registry(self.settings, where)
        self.serde = Serde(self.registry)
        self.log = AuditLog(where, self.serde)

    def close(self) -> None:
        self.registry.close()


@app.command()
def verify(
    start: str | None = _FROM,
    end: str | None = _TO,
    public_key: str | None = typer.Option(
        None, "--public-key", help="The mesh's public key (hex); default: this state dir's."
    ),
    sources: bool = typer.Option(
        True,
        "--sources/--no-sources",
        help="Also check that each link names a source record with the bytes it claims.",
    ),
    complete: bool = typer.Option(
        False,
        "--complete",
        help="Also fail when a source record written before this verify started is not in "
        "the audit, naming it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="The verdict as one JSON object."),
) -> None:
    """Check the chain of every audit partition; exit 1 naming the first bad record."""
    window = _window(start, end)
    if complete and window != Window():
        raise typer.BadParameter("--complete checks the whole log; drop --from and --to")
    session = _Session()
    claims: Claims | None = {} if sources or complete else None
    try:
        key = _public_key(session.settings, public_key)
        problems = session.log.config_problems()
        started = time.monotonic()
        ends = audited_ends(session.log.cluster, AUDITED) if complete else None
        results = verify_log(session.log, window, key, claims)
        report = check_sources(session.log.cluster, claims, ends) if claims is not None else None
        seconds = time.monotonic() - started
    finally:
        session.close()
    if as_json:
        verdict = _verdict(results, report, ends, problems, seconds)
        print(json.dumps(verdict))
        if not verdict["ok"]:
            raise typer.Exit(1)
        return
    for result in results:
        console.print(_summary(result))
    records = sum(r.records for r in results)
    console.print(
        f"{records} records checked in {seconds:.2f}s ({records / max(seconds, 1e-9):,.0f}/s)"
    )
    if report is not None:
        console.print(
            f"sources: {report.checked} links match their source record, "
            f"{report.not_retained} name a record no longer retained"
        )
        problems += [f"source check: {p}" for p in report.problems]
        if ends is not None:
            _completeness(report, len(ends), problems)
    for result in results:
        problems += [f"foreign link: {p}" for p in result.foreign]
    bad = [r.problem for r in results if r.problem is not None]
    for problem in problems:
        console.print(f"[bold red]FAIL[/] {problem}")
    if bad:
        console.print(f"[bold red]FAIL[/] first bad record: {bad[0]}")
    if bad or problems:
        raise typer.Exit(1)
    console.print("[bold green]OK[/] every chain verifies")


def _verdict(
    results: list[PartitionResult],
    report: SourceReport | None,
    ends: object | None,
    problems: list[str],
    seconds: float,
) -> dict[str, object]:
    """What `verify` prints, as one object (times in seconds, hashes in hex)."""
    problems = list(problems)
    if report is not None:
        problems += [f"source check: {p}" for p in report.problems]
        if ends is not None and report.missing:
            problems.append(
                f"incomplete: {report.missing} source records are not in the audit, first "
                f"{', '.join(report.first_missing)}"
            )
    for result in results:
        problems += [f"foreign link: {p}" for p in result.foreign]
    bad = [str(r.problem) for r in results if r.problem is not None]
    partitions = [
        {
            "partition": r.partition,
            "records": r.records,
            "first_sequence": r.first_sequence,
            "head_sequence": None if r.head is None else r.head.sequence,
            "head_hash": None if r.head is None else r.head.record_hash.hex(),
            "sealed_through": r.sealed_through,
        }
        for r in results
    ]
    sources = None
    if report is not None:
        sources = {"checked": report.checked, "not_retained": report.not_retained,
                   "missing": report.missing if ends is not None else None}  # fmt: skip
    return {
        "ok": not bad and not problems,
        "records": sum(r.records for r in results),
        "seconds": round(seconds, 3),
        "partitions": partitions,
        "sources": sources,
        "first_bad_record": bad[0] if bad else None,
        "problems": problems,
    }


def _completeness(report: SourceReport, partitions: int, problems: list[str]) -> None:
    if not report.missing:
        console.print(f"complete: every record of {partitions} audited partitions is recorded")
        return
    for line in report.behind:
        console.print(f"audit lag: {line}")
    problems.append(
        f"incomplete: {report.missing} source records are not in the audit, first "
        f"{', '.join(report.first_missing)}"
    )


def _summary(result: PartitionResult) -> str:
    head = result.head
    if head is None:
        return f"partition {result.partition}: empty"
    return (
        f"partition {result.partition}: {result.records} records, sequences "
        f"{result.first_sequence}..{head.sequence}, head {head.record_hash.hex()[:16]}, "
        f"sealed through {result.sealed_through if result.sealed_through is not None else '-'}"
        f" ({result.unsealed} after the last checkpoint)"
    )


@app.command()
def replay(
    agent: str | None = typer.Option(None, "--agent", help="Only what concerns this agent."),
    task: str | None = typer.Option(None, "--task", help="Only what concerns this task."),
    start: str | None = _FROM,
    end: str | None = _TO,
) -> None:
    """Re-emit a window of the log in order (by source time), decoded, as JSON Lines."""
    if agent is None and task is None and start is None and end is None:
        raise typer.BadParameter("give --agent, --task, or a --from/--to window")
    window = _window(start, end)
    session = _Session()
    try:
        codec = MessageCodec(session.serde, PublicKeys())
        shown = 0
        for _, _, link in in_source_order(session.log, window):
            view = decoded_view(link, codec)
            if involves(view, agent, task):
                print(json.dumps(view, default=str))
                shown += 1
    finally:
        session.close()
    typer.echo(f"# {shown} records replayed", err=True)
    if shown == 0 and (agent or task):
        named = f"agent {agent!r}" if agent else f"task {task!r}"
        typer.echo(
            f"no audit record concerns {named} in this window; check the id (`mesh agents ls` "
            "lists agents)",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def export(
    out: Path = typer.Option(..., "--out", help="JSON Lines file to write.", dir_okay=False),
    start: str | None = _FROM,
    end: str | None = _TO,
) -> None:
    """Write the log (or a window) as JSON Lines, with OUT.manifest.json beside it."""
    if not out.parent.is_dir():
        raise typer.BadParameter(f"directory {out.parent} does not exist", param_hint="--out")
    window = _window(start, end)
    try:
        _export(out, window)
    except OSError as exc:  # a full disk, a read-only directory: one line, never a traceback
        raise ConfigError(f"cannot write the export to {out}: {exc.strerror or exc}") from exc


def _export(out: Path, window: Window) -> None:
    session = _Session()
    manifest: dict[str, object] = {"from": window.from_ms, "to": window.to_ms, "partitions": {}}
    count = 0
    try:
        with out.open("w", encoding="utf-8") as sink:
            for partition in session.log.partitions():
                first = last = None
                for entry in session.log.entries(partition, window):
                    if entry.link is None:
                        continue
                    sink.write(json.dumps(export_line(entry.link, entry.offset)) + "\n")
                    first = first or entry.link
                    last = entry.link
                    count += 1
                manifest["partitions"][str(partition)] = _range(first, last)  # type: ignore[index]
        manifest |= {
            "count": count,
            "mesh_public_key": mesh_anchor(session.settings).hex(),
            "exported_at": int(time.time() * 1000),
            "format": "docs/audit-format.md",
        }
    finally:
        session.close()
    manifest_path = out.with_name(out.name + ".manifest.json")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {count} records to {out} and the manifest to {manifest_path}")


def _range(first: Link | None, last: Link | None) -> dict[str, object]:
    if first is None or last is None:
        return {"count": 0}
    return {
        "first_sequence": first.sequence,
        "last_sequence": last.sequence,
        "count": last.sequence - first.sequence + 1,
        "head_hash": last.record_hash.hex(),
        "first_prev_hash": first.prev_hash.hex(),
    }
