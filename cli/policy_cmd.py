"""`mesh policy check|diff|set|show|history`: operator-owned policies (mesh.domain.policies).

Policies live as files in a repository (policy as code): ``check`` validates them (run it in
CI), ``set`` publishes one as the next version for an agent, a capability or the fleet, signed
with this host's operator key; sidecars pick it up without a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from cli.common import cluster, console, settings
from mesh.adapters.kafka.agents import read_agents
from mesh.adapters.keyfiles import trust_anchors
from mesh.adapters.policies import PolicyLog, publish_policy, read_policies
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.dependencies import capabilities
from mesh.domain.identity import PublicKeys
from mesh.domain.moments import utc_text
from mesh.domain.policies import FLEET, PolicyInForce, canonical, diff_policies, policy_hash
from mesh.errors import ConfigError
from processors.killswitch import load_policy
from sidecar.policy import parse_agent_policy

app = typer.Typer(help="Operator-owned agent policies: check, diff, set, show, history.")


def _load(path: Path) -> dict[str, Any]:
    """A policy file (the sidecar policy's JSON form), validated; ConfigError says why not."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    parse_agent_policy(data, str(path))
    return dict(data)


@app.command()
def check(
    files: list[Path] = typer.Argument(
        ..., help="Agent policy files (JSON) and kill-switch policy files (TOML)."
    ),
) -> None:
    """Validate policy files (for CI): exit 1 naming each bad one. A ``.toml`` file is a
    kill-switch policy (budgets per agent, fleet and chain); its hash is the one stamped on
    the halts it decides."""
    bad = 0
    for path in files:
        try:
            digest = _digest(path)
        except ConfigError as exc:
            console.print(f"[bold red]FAIL[/] {escape(str(exc))}")
            bad += 1
            continue
        console.print(f"ok {escape(str(path))}: hash {digest[:16]}")
    if bad:
        raise typer.Exit(1)


def _digest(path: Path) -> str:
    if path.suffix == ".toml":
        return load_policy(path).digest
    return policy_hash(canonical(_load(path)))


_CAPABILITY = typer.Option(None, "--capability", help="Every agent offering C.")
_FLEET = typer.Option(False, "--fleet", help="The fleet default.")


class _Mesh:
    """What a policy command reads with: the cluster, a codec, the trust anchors."""

    def __enter__(self) -> _Mesh:
        current = settings()
        self.cluster = cluster(current)
        self.registry = open_registry(current, self.cluster)
        self.codec = MessageCodec(Serde(self.registry), PublicKeys())
        self.signers = trust_anchors(current)
        return self

    def __exit__(self, *_: object) -> None:
        self.registry.close()

    def policies(self) -> PolicyLog:
        return read_policies(self.cluster, self.codec, self.signers)


def _target(agent: str | None, capability: str | None, fleet: bool) -> str:
    if sum((agent is not None, capability is not None, fleet)) != 1:
        raise typer.BadParameter("name exactly one target: AGENT, --capability C or --fleet")
    return agent or (f"capability:{capability}" if capability else FLEET)


@app.command("set")
def set_policy(
    agent: str | None = typer.Argument(None, help="The agent the policy is for."),
    capability: str | None = _CAPABILITY,
    fleet: bool = _FLEET,
    file: Path = typer.Option(..., "--file", help="The policy (JSON), from your repository."),
    reason: str = typer.Option(..., "--reason", help="Why, in words (recorded and audited)."),
) -> None:
    """Publish a policy as the next version for its target, signed with the operator key."""
    target = _target(agent, capability, fleet)
    policy = _load(file)
    with _Mesh() as mesh:
        in_force = publish_policy(mesh.cluster, mesh.codec, mesh.signers, target, policy, reason)
    console.print(f"in force: {_line(in_force)}")


@app.command()
def diff(
    agent: str | None = typer.Argument(None, help="The agent whose policy would change."),
    capability: str | None = _CAPABILITY,
    fleet: bool = _FLEET,
    file: Path = typer.Option(..., "--file", help="The policy `set` would publish."),
) -> None:
    """What `mesh policy set` with FILE would change for its target, key by key."""
    target = _target(agent, capability, fleet)
    new = _load(file)
    with _Mesh() as mesh:
        held = mesh.policies().book.targets.get(target)
    old = held.policy if held is not None else {}
    lines = diff_policies(old, new)
    what = f"{target} v{held.version}" if held is not None else f"{target} (no policy yet)"
    console.print(f"{what} -> {file}: {len(lines) or 'no'} change{'s' if len(lines) != 1 else ''}")
    for line in lines:
        console.print(line, highlight=False)


@app.command()
def show(
    agent: str | None = typer.Argument(None, help="Only the policy in force for AGENT."),
) -> None:
    """The policies in force (or the one for AGENT: its own, its capability's or the fleet's)."""
    with _Mesh() as mesh:
        log = mesh.policies()
        agents = read_agents(mesh.cluster, mesh.codec.serde) if agent else {}
    for note in log.ignored:
        console.print(f"[yellow]ignored[/] {note}")
    if agent is not None:
        in_force = log.book.in_force(agent, capabilities(agents.get(agent)))
        if in_force is None:
            console.print(f"no operator policy applies to {agent!r}: its own policy alone")
            raise typer.Exit(1)
        console.print(_line(in_force))
        console.print(json.dumps(in_force.policy, indent=2, sort_keys=True))
        return
    if not log.book.targets:
        console.print("no operator policies")
    for _, in_force in sorted(log.book.targets.items()):
        console.print(_line(in_force))


@app.command()
def history(
    target: str | None = typer.Argument(None, help="AGENT, capability:C or *."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per version, per line."),
) -> None:
    """Every version published, oldest first, with who published it and why."""
    with _Mesh() as mesh:
        log = mesh.policies()
    for at_ms, record in log.history:
        if target is None or record.target == target:
            when = utc_text(at_ms)
            if as_json:
                print(json.dumps({
                    "at": when, "target": record.target, "version": record.version,
                    "hash": record.hash, "author": record.author, "reason": record.reason,
                    "policy": json.loads(record.policy_json),
                }))  # fmt: skip
                continue
            console.print(f"{when} {_line(record)}")


def _line(record: PolicyInForce) -> str:
    return (
        f"{record.target} v{record.version} hash {record.hash[:16]} by {record.author}: "
        f"{record.reason}"
    )
