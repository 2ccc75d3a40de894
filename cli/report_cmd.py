"""`mesh report --from TIME --to TIME --out report.html`: the compliance report of a window.

For an auditor or a board: the fleet's inventory with owners and certification, gate results,
halts and human decisions with their evidence, drills, refusals by rule and policy, the KPIs of
the window, and the audit verification with the signed checkpoints that seal it. Every claim
names its audit coordinates (``audit P#S``: audit partition P, chain sequence S). Sections are
mapped to EU AI Act record-keeping and oversight (Articles 12, 14, 19, 26(6)), to the
production gates, and to the OWASP AISVS C9 controls whose evidence the window holds.

HTML only, self-contained (no script, no remote asset): it opens offline and prints to PDF
from any browser. Exit 1 when the window's audit does not verify (the report still says so).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer

from cli.common import console, parse_time, reading, settings
from mesh.adapters.audit.log import Window
from mesh.adapters.report import ReportData, gates_of, gather_report
from mesh.domain.gates import certified_for_production
from mesh.domain.kpis import FLEET, figures
from mesh.domain.moments import utc_text as _when
from mesh.errors import ConfigError


def report(
    from_: str = typer.Option(..., "--from", help="Start of the window (ISO-8601 or epoch ms)."),
    to: str = typer.Option(..., "--to", help="End of the window (ISO-8601 or epoch ms)."),
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
) -> None:
    """Write the compliance report of a window as one self-contained HTML page."""
    window = Window(parse_time(from_, "--from"), parse_time(to, "--to"))
    if window.from_ms is not None and window.to_ms is not None and window.from_ms >= window.to_ms:
        raise typer.BadParameter("--from must be before --to", param_hint="--from")
    if out.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter("write .html (print it to PDF from a browser)", param_hint="--out")
    with reading(settings()) as (where, codec):
        data = gather_report(where, codec, window, int(time.time() * 1000))
    try:
        out.write_text(render(data), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from exc
    verified = _verified(data)
    console.print(
        f"wrote {out}: {data.records} audit records in the window, "
        f"{'chain verified' if verified else 'AUDIT DOES NOT VERIFY'}; "
        f"{len(data.certifications)} certification verdict(s), {len(data.halts)} halt(s), "
        f"{len(data.approvals)} approval step(s), {len(data.drills)} drill(s)"
    )
    if not verified:
        raise typer.Exit(1)


def _verified(data: ReportData) -> bool:
    return all(r.problem is None for r in data.verification)


# -- rendering ---------------------------------------------------------------------------------


def render(data: ReportData) -> str:
    sections = [
        _summary(data),
        _verification(data),
        _inventory(data),
        _certifications(data),
        _halts(data),
        _oversight(data),
        _drills(data),
        _refusals(data),
        _kpis(data),
        _mapping(data),
    ]
    title = (
        f"Agent Mesh compliance report, {_when(data.window.from_ms)} to {_when(data.window.to_ms)}"
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{''.join(sections)}</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top}"
    "th{background:#eee}.ok{color:#060}.bad{color:#a00;font-weight:bold}"
    "code{font-size:90%}"
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], raw: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(anchor: str, title: str, content: str) -> str:
    return f"<section id={anchor}><h2>{_e(title)}</h2>{content}</section>"


def _summary(data: ReportData) -> str:
    verdict = (
        "<span class=ok>the audit chain of the window verifies</span>"
        if _verified(data)
        else "<span class=bad>the audit chain of the window does NOT verify</span>"
    )
    return _section("summary", "Summary", (
        f"<p>Generated {_e(_when(data.generated_at_ms))} by {_e(data.generated_by)}. "
        f"{data.records} audit records in the window; {verdict}. "
        f"{len(data.agents)} agents in the registry; {len(data.certifications)} certification "
        f"verdicts, {len(data.halts)} halts, {len(data.approvals)} approval and escalation "
        f"steps, {len(data.drills)} drills and {sum(data.refusals.values())} refusals in the "
        "window. Coordinates <code>audit P#S</code> name the audit partition and the chain "
        "sequence of the record a claim rests on (<code>mesh audit replay</code>).</p>"
    ))  # fmt: skip


def _verification(data: ReportData) -> str:
    rows = []
    for result in data.verification:
        seal = data.seals.get(result.partition)
        rows.append((
            result.partition, result.records,
            "OK" if result.problem is None else f"FAILS: {result.problem}",
            "-" if seal is None else f"checkpoint #{seal.sequence} at {_when(seal.at_ms)}, "
            f"signature {seal.signature.hex()[:32]}",
        ))  # fmt: skip
    retention = data.audit_configs.get("retention.ms")
    cleanup = data.audit_configs.get("cleanup.policy")
    return _section("audit", "Audit log verification (EU AI Act Art. 12)", (
        f"<p>mesh.audit.v1: retention.ms={_e(retention)}, cleanup.policy={_e(cleanup)}. "
        "Each partition is a SHA-256 hash chain of signed links; a checkpoint signed by the "
        "mesh's key seals a chain head.</p>"
        + _table(("audit partition", "records in window", "chain", "sealed by"), rows)
        + (f"<p class=bad>{len(data.undecodable)} link(s) could not be read.</p>"
           if data.undecodable else "")
    ))  # fmt: skip


def _inventory(data: ReportData) -> str:
    now = data.generated_at_ms
    rows = []
    for agent_id, a in sorted(data.agents.items()):
        certified = (
            f"production until {_when(a.certified_until_ms)} (by {a.certified_by})"
            if certified_for_production(a, now)
            else ("no; failing: " + ", ".join(a.gates_failing) if a.gates_failing else "no")
        )
        rows.append((agent_id, a.owner, a.version, a.environment, a.status.value, certified,
                     ", ".join(a.certified_versions) or "-"))  # fmt: skip
    return _section("inventory", "Inventory (now)", _table(
        ("agent", "owner", "version", "environment", "status", "certified",
         "versions ever certified"),
        rows,
    ))  # fmt: skip


def _certifications(data: ReportData) -> str:
    parts = []
    for item in data.certifications:
        b = item.body
        verdict = "GRANTED" if b.get("granted", True) else "REFUSED"
        gates = _table(
            ("gate", "passed", "evidence", "NIST AI RMF", "EU AI Act"),
            ((g["gate"], "yes" if g["passed"] else "NO", g["evidence"],
              ", ".join(g.get("nist_ai_rmf", [])), ", ".join(g.get("eu_ai_act", [])))
             for g in gates_of(item)),
        )  # fmt: skip
        parts.append(
            f"<h3>{_e(b['agent_id'])} v{_e(b['agent_version'])}: {verdict} for "
            f"{_e(b['level'])} by {_e(b['certified_by'])} (signed {_e(item.signer)}), "
            f"{_e(_when(item.at_ms))}, until {_e(_when(b.get('expires_at')))}; "
            f"<code>{_e(item.coordinates)}</code></h3>{gates}"
        )
    return _section("gates", "Production gates and certifications", "".join(parts) or
                    "<p>No certification verdict in the window.</p>")  # fmt: skip


def _halts(data: ReportData) -> str:
    rows = (
        (_when(i.at_ms), f"{i.body['scope']} {i.body['target']}", i.body["rule"], i.body["reason"],
         i.signer, ", ".join(i.body.get("affected_agents") or ()),
         "; ".join(i.body.get("evidence") or ()), i.body.get("policy_hash") or "-", i.coordinates)
        for i in data.halts
    )  # fmt: skip
    return _section("halts", "Halts (kill-switch and operators)", _table(
        ("at", "scope", "rule", "reason", "signed by", "reached", "evidence", "policy", "audit"),
        rows,
    ))  # fmt: skip


def _oversight(data: ReportData) -> str:
    rows = (
        (_when(i.at_ms), i.body["request_id"][:8], i.body["kind"],
         "escalation" if i.body["tool"] == "mesh.escalation" else i.body["tool"],
         i.body["agent_id"], i.signer, i.body.get("arguments_json") or "",
         i.body.get("note") or "", i.coordinates)
        for i in data.approvals
    )  # fmt: skip
    return _section("oversight", "Human oversight: approvals and escalations (Art. 14)", _table(
        ("at", "request", "step", "action", "agent", "signed by", "exact action", "note",
         "audit"), rows,
    ))  # fmt: skip


def _drills(data: ReportData) -> str:
    rows = (
        (_when(i.at_ms), i.body["canary"], i.body.get("agent_version") or "scheduled",
         "passed" if i.body["ok"] else f"FAILED: {i.body.get('failure')}",
         i.body.get("halt_ms"), i.body.get("resume_ms"), i.coordinates)
        for i in data.drills
    )  # fmt: skip
    return _section("drills", "Kill-switch drills", _table(
        ("at", "agent", "version", "result", "halt ms", "resume ms", "audit"), rows
    ))  # fmt: skip


def _refusals(data: ReportData) -> str:
    rows = (
        (rule, policy, count, data.refusal_example[(rule, policy)].coordinates)
        for (rule, policy), count in data.refusals.most_common()
    )
    return _section("refusals", "Refusals by rule and deciding policy", _table(
        ("rule", "policy hash", "refused", "first in the window"), rows
    ))  # fmt: skip


def _kpis(data: ReportData) -> str:
    if data.kpis is None:
        return ""
    book = data.kpis.book
    scopes = [FLEET] + [s for s in book.scopes() if s != FLEET]
    names = ("tasks", "completed", "task_success_rate", "value_usd", "cost_usd", "roi",
             "cost_per_completed_task_usd", "intervention_rate_per_100",
             "blast_radius_agents_per_halt", "mean_time_to_halt_ms",
             "handoff_failure_rate")  # fmt: skip
    rows = []
    for scope in scopes:
        f = figures(book.window(scope, "all", data.generated_at_ms))
        rows.append((scope, *("-" if f[n] is None else f[n] for n in names)))
    skipped = f"<p>{len(data.kpis.skipped)} fact(s) did not verify and were left out.</p>"
    content = _table(("scope", *names), rows) + (skipped if data.kpis.skipped else "")
    return _section("kpis", "KPIs of the window (folded from the audit log)", content)


def _mapping(data: ReportData) -> str:
    chain_halts = sum(1 for i in data.halts if i.body["scope"] == "CHAIN")
    decided = [i for i in data.approvals if i.body["kind"] in ("APPROVED", "REJECTED")]
    used = [i for i in data.approvals if i.body["kind"] == "USED"]
    drills_ok = sum(1 for i in data.drills if i.body["ok"])
    granted = sum(1 for i in data.certifications if i.body.get("granted", True))
    rows = [
        ("EU AI Act Art. 12", "events recorded automatically over the lifetime",
         f"{data.records} audit records; chain {'verifies' if _verified(data) else 'FAILS'}",
         "#audit"),
        ("EU AI Act Art. 19, 26(6)", "logs kept at least six months",
         f"audit retention.ms={data.audit_configs.get('retention.ms')} (-1: forever), never "
         "compacted", "#audit"),
        ("EU AI Act Art. 14", "human oversight: can intervene and stop",
         f"{len(decided)} human decisions, {len(data.halts)} halts, {drills_ok} passing drills",
         "#oversight"),
        ("Production gates", "every agent messaging production certified",
         f"{granted} certification(s) granted, {len(data.certifications) - granted} refused",
         "#gates"),
        ("AISVS 9.1.2, 9.1.3", "chain budgets hard-stop the chain",
         f"{chain_halts} chain halt(s)", "#halts"),
        ("AISVS 9.2.1-9.2.5", "approvals bound, single-use, expiring",
         f"{len(decided)} decisions signed by operators, {len(used)} used once", "#oversight"),
        ("AISVS 9.4.3", "tamper-evident audit with the deciding policy",
         f"{sum(data.refusals.values())} refusals each with their policy hash", "#refusals"),
        ("AISVS 9.8.1", "environments isolated, default-deny across them",
         "uncertified agents refused production (rule not_certified: "
         f"{sum(c for (r, _), c in data.refusals.items() if r == 'not_certified')})",
         "#refusals"),
        ("AISVS 9.8.6", "the fleet can be stopped within a set time",
         f"{drills_ok} passing drill(s) in the window", "#drills"),
    ]  # fmt: skip
    body = _table(
        ("requirement", "what it asks", "evidence in the window", "section"),
        ((_e(a), _e(b), _e(c), f"<a href='{d}'>{d[1:]}</a>") for a, b, c, d in rows),
        raw=True,
    )
    return _section("mapping", "Requirements and their evidence", body)
