"""`mesh halt`, `mesh resume`, `mesh halts`: operators steer the fleet by hand.

Commands are signed with the operator's key and record who asked (``requested_by``); they go to
``mesh.control.v2`` like the kill-switch's own, so sidecars, the kill-switch and the audit log
see them the same way.
"""

from __future__ import annotations

import json

import typer

from cli.common import cluster, console, reading, settings
from mesh.adapters.commands import read_halts, send_command
from mesh.adapters.keyfiles import trust_anchors
from mesh.domain.control import Action, Scope

_AGENT = typer.Argument(None, help="The agent to halt or resume.")
_CAPABILITY = typer.Option(None, "--capability", help="Every agent with this capability.")
_FLEET = typer.Option(False, "--fleet", help="The whole fleet.")
_CHAIN = typer.Option(
    None, "--chain", help="One chain of messages (its correlation id): its agents go on."
)


def _scope(
    agent: str | None, capability: str | None, fleet: bool, widen: bool, chain: str | None = None
) -> Scope:
    chosen = [x for x in (agent, capability, fleet or None, chain) if x]
    if len(chosen) != 1:
        raise typer.BadParameter("name exactly one of AGENT, --capability C, --chain ID or --fleet")
    if widen and agent is None:
        raise typer.BadParameter(
            "--with-dependants applies to an AGENT", param_hint="--with-dependants"
        )
    if fleet:
        return Scope.FLEET
    if chain is not None:
        return Scope.CHAIN
    if capability is not None:
        return Scope.CAPABILITY
    return Scope.DEPENDANTS if widen else Scope.AGENT


def halt(
    agent: str | None = _AGENT,
    capability: str | None = _CAPABILITY,
    fleet: bool = _FLEET,
    chain: str | None = _CHAIN,
    with_dependants: bool = typer.Option(
        False, "--with-dependants", help="Also every agent that depends on AGENT."
    ),
    reason: str = typer.Option(..., "--reason", help="Why, in words (recorded and audited)."),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for every running agent it reaches to acknowledge it."
    ),
    deadline: float = typer.Option(
        5.0, "--deadline", min=0.1, max=600, help="Seconds --wait waits (default 5)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Halt an agent or capability the registry does not know (yet)."
    ),
) -> None:
    """Halt an agent, its dependants, a capability, one chain or the fleet until an explicit
    resume. With --wait, exit 1 naming every running agent that did not acknowledge in time."""
    scope = _scope(agent, capability, fleet, with_dependants, chain)
    target = agent or capability or chain or "*"
    _send(Action.HALT, scope, target, reason, deadline if wait else None, force)


def resume(
    agent: str | None = _AGENT,
    capability: str | None = _CAPABILITY,
    fleet: bool = _FLEET,
    chain: str | None = _CHAIN,
    reason: str = typer.Option(..., "--reason", help="Why, in words (recorded and audited)."),
) -> None:
    """Lift the halt on an agent (and the dependants halted with it), a capability, a chain
    or the fleet."""
    scope = _scope(agent, capability, fleet, False, chain)
    _send(Action.RESUME, scope, agent or capability or chain or "*", reason)


def halts(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per halt, per line."),
) -> None:
    """The halts in force."""
    current = settings()
    with reading(current) as (where, codec):
        found = read_halts(where, codec, trust_anchors(current))
    if as_json:
        for key, command in sorted(found.halts.items()):
            print(json.dumps({"key": key, **command}, default=str))
        return
    for reason in found.ignored:
        console.print(f"[yellow]ignored[/] {reason}")
    if not found.halts:
        console.print("no halts in force")
    for key, command in sorted(found.halts.items()):
        names = ", ".join(command["affected_agents"])
        if command["scope"] == Scope.CHAIN.value:
            reach = f"participants {names or 'not named'} (they go on with other chains)"
        else:
            reach = f"affects {names or key}"
        console.print(
            f"{key}: {command['scope'].lower()} halt by {command['rule']} "
            f"({command['requested_by']}): {command['reason']}; {reach}"
        )


def _send(
    action: Action,
    scope: Scope,
    target: str,
    reason: str,
    wait_s: float | None = None,
    force: bool = False,
) -> None:
    current = settings()
    record, operator, notes, acks = send_command(
        cluster(current), action, scope, target, reason, wait_s, force
    )
    for note in notes:
        console.print(f"note: {note}")
    affected = record["affected_agents"]
    console.print(
        f"{action.value.lower()} {scope.value.lower()} {target} sent as {operator}"
        + (f"; affects {', '.join(affected)}" if affected else "")
    )
    console.print(json.dumps({"command_id": record["command_id"]}))
    if acks is None:
        return
    console.print(f"acknowledged by: {', '.join(acks.acknowledged) or 'none'}")
    if acks.missing:
        console.print(
            f"[bold red]no acknowledgement[/] within {wait_s:g}s from: {', '.join(acks.missing)}"
        )
        raise typer.Exit(1)
