"""`mesh gates check|drill|certify`: the production gates (stack.gates, mesh.domain.gates)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from cli.common import console, reading, settings
from mesh.adapters.gates import certify as certify_agent
from mesh.adapters.gates import drill_agent, gather, load_profile, wait_certified
from mesh.domain.gates import GateResult, Profile, evaluate, failing

app = typer.Typer(help="Production gates: check, drill and certify an agent.", no_args_is_help=True)

_PROFILE = typer.Option(
    None, "--profile", help="A gates profile (TOML); default: the built-in gates (docs/gates.md)."
)
_ATTEST = typer.Option(
    [], "--attest", help="GATE=NOTE: evidence a person states for an attested gate (repeatable)."
)


def _attestations(values: list[str], profile: Profile) -> dict[str, str]:
    """GATE=NOTE pairs, each naming an attested gate of the profile (a built-in gate is
    judged from the mesh's evidence, never from what someone says)."""
    attested = sorted(g.id for g in profile.gates if g.attested)
    found = {}
    for value in values:
        gate, sep, note = (part.strip() for part in value.partition("="))
        if not sep or not gate or not note:
            raise typer.BadParameter(f"{value!r} is not GATE=NOTE", param_hint="--attest")
        if gate not in attested:
            raise typer.BadParameter(
                f"{gate!r} is not an attested gate of the profile (attested gates: "
                f"{', '.join(attested) or 'none; add one as [gates.NAME] in a --profile'})",
                param_hint="--attest",
            )
        found[gate] = note
    return found


def _show(agent_id: str, version: str, environment: str, results: tuple[GateResult, ...]) -> None:
    console.print(f"gates of {agent_id} (version {version}, {environment}):")
    for r in results:
        mark = "[green]PASS[/]" if r.passed else ("[red]FAIL[/]" if r.gate.required else "fail")
        optional = "" if r.gate.required else " (optional)"
        console.print(f"  {mark} {r.gate.id}{optional}: {r.evidence}")


@app.command()
def check(
    agent_id: str = typer.Argument(..., help="The agent to judge."),
    profile: Path | None = _PROFILE,
    attest: list[str] = _ATTEST,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per gate, per line."),
) -> None:
    """Judge every gate from the evidence in the mesh (exit 1 if a required gate fails)."""
    gates, _ = load_profile(profile)
    with reading(settings()) as (where, codec):
        evidence = gather(where, codec, agent_id, gates, _attestations(attest, gates))
    results = evaluate(gates, evidence)
    if as_json:
        for result in results:
            print(json.dumps(result.to_json()))
    else:
        agent = evidence.agent
        _show(agent_id, agent.version, agent.environment, results)
    if failing(results):
        raise typer.Exit(1)


@app.command()
def drill(
    agent_id: str = typer.Argument(..., help="A running staging agent."),
    deadline: float = typer.Option(5.0, "--deadline", min=0.5, max=120, help="Seconds per step."),
    profile: Path | None = _PROFILE,
) -> None:
    """A signed test halt of the agent alone, its sidecar's HALT_ACK, then a resume and its
    RESUME_ACK, each timed; the result is published (exit 1 if it failed)."""
    gates, _ = load_profile(profile)
    with reading(settings()) as (where, codec):
        result = drill_agent(where, codec, agent_id, gates, deadline)
    if result.ok:
        console.print(
            f"drill of {agent_id} v{result.agent_version}: passed, halt acknowledged in "
            f"{result.halt_ms:.0f} ms, resumed in {result.resume_ms:.0f} ms"
        )
        return
    console.print(f"[red]drill of {agent_id} v{result.agent_version} FAILED[/]: {result.failure}")
    raise typer.Exit(1)


@app.command()
def certify(
    agent_id: str = typer.Argument(..., help="The agent to certify for production."),
    by: str = typer.Option(..., "--by", help="Who certifies (recorded, with the operator key)."),
    profile: Path | None = _PROFILE,
    attest: list[str] = _ATTEST,
) -> None:
    """Certify the agent's current version for production if every required gate passes;
    the verdict is signed and recorded either way (exit 1 if refused)."""
    gates, digest = load_profile(profile)
    with reading(settings()) as (where, codec):
        verdict = certify_agent(
            where, codec, agent_id, by, gates, digest, _attestations(attest, gates)
        )
        agent = wait_certified(where, codec, agent_id, verdict.granted)
    _show(agent_id, agent.version, agent.environment, verdict.results)
    if verdict.granted and verdict.expires_at_ms is not None:
        until = dt.datetime.fromtimestamp(verdict.expires_at_ms / 1000, dt.UTC)
        console.print(
            f"certified {agent_id} v{agent.version} for production by {by} until "
            f"{until:%Y-%m-%dT%H:%M:%SZ}"
        )
        return
    console.print(
        f"[red]refused[/]: {agent_id} v{agent.version} is not certified; gates failing: "
        f"{', '.join(verdict.failing)}"
    )
    raise typer.Exit(1)
