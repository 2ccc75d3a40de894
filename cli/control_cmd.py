"""`mesh halt`, `mesh resume`, `mesh halts`: operators steer the fleet by hand.

Commands are signed with the operator's key and record who asked (``requested_by``); they go to
``mesh.control.v1`` like the kill-switch's own, so sidecars, the kill-switch and the audit log
see them the same way.
"""

from __future__ import annotations

import json

import typer
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from cli.common import bootstrap, console, settings
from mesh.adapters.commands import send_command
from mesh.adapters.kafka.reading import read_to_end, reader
from mesh.adapters.keyfiles import control_signers
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.control import open_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.control import Action, HaltBook, Scope
from mesh.domain.identity import PublicKeys
from mesh.domain.topics import CONTROL
from mesh.errors import MeshError

_AGENT = typer.Argument(None, help="The agent to halt or resume.")
_CAPABILITY = typer.Option(None, "--capability", help="Every agent with this capability.")
_FLEET = typer.Option(False, "--fleet", help="The whole fleet.")


def _scope(agent: str | None, capability: str | None, fleet: bool, widen: bool) -> Scope:
    chosen = [x for x in (agent, capability, fleet or None) if x]
    if len(chosen) != 1:
        raise typer.BadParameter("name exactly one of AGENT, --capability C or --fleet")
    if widen and agent is None:
        raise typer.BadParameter(
            "--with-dependants applies to an AGENT", param_hint="--with-dependants"
        )
    if fleet:
        return Scope.FLEET
    if capability is not None:
        return Scope.CAPABILITY
    return Scope.DEPENDANTS if widen else Scope.AGENT


def halt(
    agent: str | None = _AGENT,
    capability: str | None = _CAPABILITY,
    fleet: bool = _FLEET,
    with_dependants: bool = typer.Option(
        False, "--with-dependants", help="Also every agent that depends on AGENT."
    ),
    reason: str = typer.Option(..., "--reason", help="Why, in words (recorded and audited)."),
) -> None:
    """Halt an agent, its dependants, a capability or the fleet until an explicit resume."""
    scope = _scope(agent, capability, fleet, with_dependants)
    target = agent or capability or "*"
    _send(Action.HALT, scope, target, reason)


def resume(
    agent: str | None = _AGENT,
    capability: str | None = _CAPABILITY,
    fleet: bool = _FLEET,
    reason: str = typer.Option("resumed by an operator", "--reason", help="Why, in words."),
) -> None:
    """Lift the halt on an agent (and the dependants halted with it), a capability or the fleet."""
    scope = _scope(agent, capability, fleet, False)
    _send(Action.RESUME, scope, agent or capability or "*", reason)


def halts() -> None:
    """The halts in force."""
    current = settings()
    address = bootstrap(current)
    registry = open_registry(current, address)
    codec = MessageCodec(Serde(registry), PublicKeys())
    book, signers, ignored = HaltBook(), control_signers(current), []

    def fold(message: Message) -> None:
        """In log order, as sidecars and the kill-switch fold it: signed commands only."""
        value = message.value()
        if value is None:
            return
        try:
            opened = open_control(codec, value, signers)
        except MeshError as exc:
            ignored.append(f"offset {message.offset()} of partition {message.partition()}: {exc}")
            return
        book.apply((message.key() or b"").decode(), opened.body)

    topic = f"{current.topic_prefix}{CONTROL}"
    consumer = reader(current, address)
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)]
        consumer.assign(tps)
        read_to_end(consumer, tps, fold)
    finally:
        consumer.close()
        registry.close()
    for reason in ignored:
        console.print(f"[yellow]ignored[/] {reason}")
    if not book.halts:
        console.print("no halts in force")
    for key, command in sorted(book.halts.items()):
        affects = ", ".join(command["affected_agents"]) or key
        console.print(
            f"{key}: {command['scope'].lower()} halt by {command['rule']} "
            f"({command['requested_by']}): {command['reason']}; affects {affects}"
        )


def _send(action: Action, scope: Scope, target: str, reason: str) -> None:
    current = settings()
    record, operator, notes = send_command(
        current, bootstrap(current), action, scope, target, reason
    )
    for note in notes:
        console.print(f"note: {note}")
    affected = record["affected_agents"]
    console.print(
        f"{action.value.lower()} {scope.value.lower()} {target} sent as {operator}"
        + (f"; affects {', '.join(affected)}" if affected else "")
    )
    console.print(json.dumps({"command_id": record["command_id"]}))
