"""Operator commands on ``mesh.control.v2``: signed with the operator's key, naming who asked.

Used by `mesh halt` / `mesh resume` and by `mesh demo` (which lifts the halt its previous run
left on its runaway agent, as an operator would).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from confluent_kafka import Producer

from mesh.adapters.acks import Acks, AckWatch, live_targets
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.kafka.halts import HaltTable
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.kafka.producing import produce_one
from mesh.adapters.keyfiles import mesh_anchor, operator_key, trust_anchors
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.control import seal_control
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.agents import AgentState
from mesh.domain.control import (
    Action,
    Scope,
    control_key,
    control_record,
    halt_in_force,
    is_mesh_process,
)
from mesh.domain.dependencies import dependants, unknown_target, with_capability
from mesh.domain.identity import PublicKeys
from mesh.domain.topics import CONTROL
from mesh.errors import (
    KafkaUnavailableError,
    MeshError,
    NotHaltedError,
    UnknownTargetError,
)
from mesh.settings import Cluster

__all__ = ["HaltsInForce", "Sent", "publish_command", "read_halts", "send_command"]


class Sent(NamedTuple):
    record: dict[str, Any]
    operator: str
    #: What the operator should know: e.g. the registry could not be read, so the command
    #: names nobody in ``affected_agents`` (a fleet or capability halt still applies to all).
    notes: tuple[str, ...] = ()
    #: With ``wait_s``: which running agents acknowledged the halt, and which did not.
    acks: Acks | None = None


def send_command(
    cluster: Cluster,
    action: Action,
    scope: Scope,
    target: str,
    reason: str,
    wait_s: float | None = None,
    force: bool = False,
    producer: Producer | None = None,
    agents: Mapping[str, AgentState] | None = None,
) -> Sent:
    """Publish one signed command; returns it, the operator id that sent it, and notes. With
    ``wait_s`` (a halt), also wait that long for the running agents it reaches to acknowledge
    it (mesh.adapters.acks). A halt of an agent or capability the registry does not know is
    refused (a typo would halt nobody while the real agent runs on) unless ``force``.
    ``producer``: one kept connected by a long-running caller (the console); without it the
    command goes out through a producer that needs no producer id (a command is repeatable,
    see mesh.adapters.kafka.producing).
    ``agents``: the registry as a long-running caller already follows it (the console), so a
    command does not read the whole registry topic again first."""
    key = operator_key(cluster.settings)
    registry = open_registry(cluster.settings, cluster)
    try:
        codec = MessageCodec(Serde(registry), PublicKeys())
        watch = AckWatch(cluster, codec) if wait_s is not None else None
        lifts = _halt_to_lift(cluster, codec, scope, target) if action is Action.RESUME else None
        registry_now = _Registry(cluster, codec.serde, agents)
        if action is Action.HALT and not force:
            _refuse_unknown(registry_now, scope, target)
        affected, notes = _affected(registry_now, scope, target)
        record = control_record(
            action,
            scope,
            target,
            rule="operator",
            reason=reason,
            requested_by=key.agent_id,
            affected=affected,
            lifts=lifts,
        )
        value = seal_control(codec, key, record, int(time.time() * 1000))
        _produce(cluster, control_key(scope, target), value, producer)
        acks = None
        if watch is not None and wait_s is not None:
            known = registry_now.agents()
            targets = live_targets(known, affected if scope is not Scope.FLEET else known)
            keys = read_keys(cluster, codec.serde, mesh_anchor(cluster.settings))
            acks = watch.wait(record["command_id"], targets, keys, wait_s)
    finally:
        registry.close()
    return Sent(record, key.agent_id, notes, acks)


class _Registry:
    """The registry a command is checked against: the caller's, or read once when first
    needed."""

    def __init__(
        self, cluster: Cluster, serde: Serde, agents: Mapping[str, AgentState] | None
    ) -> None:
        self._cluster, self._serde, self._agents = cluster, serde, agents

    def agents(self) -> Mapping[str, AgentState]:
        if self._agents is None:
            self._agents = read_agents(self._cluster, self._serde)
        return self._agents


def _refuse_unknown(registry: _Registry, scope: Scope, target: str) -> None:
    if scope in (Scope.FLEET, Scope.CHAIN):  # a chain is known by its messages, not a registry
        return
    if scope is not Scope.CAPABILITY and is_mesh_process(target):
        raise UnknownTargetError(
            f"{target!r} is one of the mesh's own processes, which no halt stops; nothing was "
            "sent. Stop it as a process (`mesh down`, or its supervisor)"
        )
    try:
        agents = registry.agents()
    except MeshError:
        return  # halting is the safe side: without the registry, the halt goes out unchecked
    why = unknown_target(agents, scope is Scope.CAPABILITY, target)
    if why is not None:
        raise UnknownTargetError(
            f"{why}; nothing was sent. Add --force to halt an agent that has not registered yet"
        )


def _halt_to_lift(cluster: Cluster, codec: MessageCodec, scope: Scope, target: str) -> str:
    """The command id of the halt in force under the resume's key (a resume names it)."""
    key = control_key(scope, target)
    found = read_halts(cluster, codec, trust_anchors(cluster.settings)).halts
    if key not in found:
        covering = halt_in_force(found, target) if scope is Scope.AGENT else None
        if covering is not None:
            under = next(k for k, h in found.items() if h["command_id"] == covering["command_id"])
            raise NotHaltedError(
                f"{target!r} is halted by the {covering['scope'].lower()} halt under {under!r}, "
                f"not by one of its own: resume {under!r} to lift it"
            )
        in_force = ", ".join(sorted(found)) or "none"
        raise NotHaltedError(
            f"{key!r} is not halted, so there is nothing to resume (halts in force: {in_force}); "
            "`mesh halts` lists them"
        )
    return str(found[key]["command_id"])


def _affected(registry: _Registry, scope: Scope, target: str) -> tuple[list[str], tuple[str, ...]]:
    """Who the command reaches. An agent-and-dependants halt reaches exactly the agents it
    names, so it is refused when the registry cannot be read; a fleet or capability halt is
    obeyed by every sidecar it matches whatever it names, so it still goes out, with a note."""
    if scope is Scope.AGENT:
        return [target], ()
    if scope is Scope.CHAIN:  # every sidecar refuses the chain's work, whoever it is
        return [], ()
    try:
        agents = registry.agents()
    except MeshError as exc:
        if scope is Scope.DEPENDANTS:
            raise KafkaUnavailableError(
                f"cannot read the registry to find {target!r}'s dependants ({exc}); nothing "
                f"was sent. Halt the agent alone (`mesh halt {target}`) or retry"
            ) from exc
        note = (
            f"the registry could not be read ({exc}), so the command names no agents; every "
            "sidecar it matches obeys it all the same"
        )
        return [], (note,)
    if scope is Scope.DEPENDANTS:
        return [target, *dependants(agents, target)], ()
    if scope is Scope.CAPABILITY:
        return with_capability(agents, target), ()
    return sorted(agents), ()


def _produce(cluster: Cluster, key: str, value: bytes, producer: Producer | None) -> None:
    produce_one(
        cluster, cluster.topic(CONTROL), key, value, "the command", producer, repeatable=True
    )


def publish_command(
    cluster: Cluster,
    codec: MessageCodec,
    record: Mapping[str, Any],
    producer: Producer | None = None,
) -> None:
    """Sign ``record`` (a :func:`~mesh.domain.control.control_record`) with this host's
    operator key and produce it (with ``producer`` if given); returns once the broker has it.
    No checks: the scheduled drill, which knows its target, times from here (`send_command`
    is the checked path)."""
    key = operator_key(cluster.settings)
    value = seal_control(codec, key, record, int(time.time() * 1000))
    _produce(cluster, control_key(Scope(record["scope"]), str(record["target"])), value, producer)


class HaltsInForce(NamedTuple):
    halts: dict[str, dict[str, Any]]  # by control key
    ignored: list[str]  # records no control signer signed, tombstones, stale commands: why


def read_halts(cluster: Cluster, codec: MessageCodec, signers: Mapping[str, bytes]) -> HaltsInForce:
    """The halts in force, folded from the control topic in log order exactly as sidecars and
    the kill-switch fold it (:class:`~mesh.domain.control.HaltBook`: ordered control)."""
    table = HaltTable(cluster, codec, signers).read_once()
    return HaltsInForce(table.book.halts, table.ignored)
