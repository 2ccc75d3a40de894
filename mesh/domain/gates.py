"""Production gates (pure): what an agent must show before it touches production, judged from
evidence already in the mesh.

An agent runs in an **environment** (``staging`` or ``production``, declared at registration).
A message to a production agent needs a sender **certified for production** at its current
version (:func:`production_refusal`); the sender's sidecar refuses it otherwise, and the
receiving sidecar refuses it again on receipt, so an agent that goes around its own sidecar
gains nothing. A certification is an operator-signed ``AgentCertified`` (``mesh gates
certify``), recorded only when every required gate passes; it lapses when the agent registers
another version, and when its evidence goes stale (:func:`expires_at`: the drill it rests on
ages out).

Gates are data (:class:`Profile`, from TOML with these defaults), each mapped to NIST AI RMF
subcategories and EU AI Act articles. A team adds its own as ``attested`` gates: evidence a
person states at certification (``--attest GATE=NOTE``), signed into the record.

The built-in gates and the evidence each reads (:class:`Evidence`):

* ``blast_radius``: the operator's policy bounds recipients and tools, and a halt with
  dependants reaches at most ``max_dependants`` other agents;
* ``spend_limits``: the operator's policy sets a budget, and the kill-switch (which halts on
  spend velocity) is heartbeating;
* ``killswitch_tested``: a drill of this agent at this version passed (``mesh gates drill``:
  a signed halt acknowledged within ``drill_ack_ms``, then a resume) within ``drill_max_age_s``,
  and the fleet's scheduled drill passes;
* ``rollback_plan``: an earlier version was certified, or the owner registered a rollback note;
* ``logging``: the audit topic keeps everything (``retention.ms=-1``, never compacted) and the
  audit processor has recorded the agent's inbox up to at most ``max_audit_lag`` records;
* ``escalation_path``: a running agent offers ``escalation_capability`` and the agent's
  policy lets it address that capability;
* ``ownership``: an owner, and a card that declares at least one skill (its contract).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mesh.domain.agents import AgentState
from mesh.domain.dependencies import capabilities
from mesh.domain.drills import DrillResult
from mesh.errors import ConfigError

__all__ = [
    "ENVIRONMENTS",
    "PRODUCTION",
    "STAGING",
    "Evidence",
    "Gate",
    "GateResult",
    "Profile",
    "certified_for_production",
    "default_profile",
    "evaluate",
    "expires_at",
    "failing",
    "parse_profile",
    "production_refusal",
]

PRODUCTION = "production"
STAGING = "staging"
ENVIRONMENTS = (STAGING, PRODUCTION)


@dataclass(frozen=True, slots=True)
class Gate:
    id: str
    title: str
    required: bool = True
    nist_ai_rmf: tuple[str, ...] = ()
    eu_ai_act: tuple[str, ...] = ()
    attested: bool = False  # evidence a person states at certification, not read from the mesh


@dataclass(frozen=True, slots=True)
class Profile:
    gates: tuple[Gate, ...]
    max_dependants: int = 5
    drill_max_age_s: float = 7 * 86400.0
    drill_ack_ms: float = 1000.0
    max_audit_lag: int = 1000
    escalation_capability: str = "escalation"
    valid_for_s: float = 30 * 86400.0


DEFAULT_GATES = (
    Gate("blast_radius", "blast radius capped", True, ("MANAGE-2.4", "MAP-3.5"), ("Art. 9",)),
    Gate("spend_limits", "spending limits hard-enforced", True, ("MANAGE-1.3",), ("Art. 9",)),
    Gate("killswitch_tested", "kill-switch tested", True, ("MANAGE-2.4",), ("Art. 14(4)(e)",)),
    Gate("rollback_plan", "rollback plan", True, ("MANAGE-2.3",), ("Art. 9",)),
    Gate("logging", "logging meets the profile", True, ("MEASURE-2.8",), ("Art. 12", "Art. 19")),
    Gate("escalation_path", "human escalation path", True, ("GOVERN-3.2",), ("Art. 14",)),
    Gate("ownership", "owner and contracts declared", True, ("GOVERN-2.1",), ("Art. 26(2)",)),
)


def default_profile() -> Profile:
    return Profile(DEFAULT_GATES)


def parse_profile(text: str, where: str = "gates profile") -> Profile:
    """A profile from TOML: top-level settings override the defaults; ``[gates.ID]`` tables
    change a built-in gate (``required``, ``title``, mappings) or add an attested one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    profile = default_profile()
    settings = {k: v for k, v in data.items() if k != "gates"}
    known = set(Profile.__dataclass_fields__) - {"gates"}
    for key, value in settings.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}; expected {sorted(known)}")
        wanted = type(getattr(profile, key))
        if not isinstance(value, wanted | (int if wanted is float else wanted)):
            raise ConfigError(f"{where}: {key} must be a {wanted.__name__}, not {value!r}")
    profile = replace(profile, **settings)
    gates = {g.id: g for g in profile.gates}
    for gate_id, table in (data.get("gates") or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: gates.{gate_id} must be a table")
        gates[gate_id] = _gate(gate_id, table, gates.get(gate_id), where)
    return replace(profile, gates=tuple(gates.values()))


def _gate(gate_id: str, table: Mapping[str, Any], base: Gate | None, where: str) -> Gate:
    allowed = {"title", "required", "nist_ai_rmf", "eu_ai_act"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: gates.{gate_id}: unknown key {unknown[0]!r}")
    gate = base or Gate(gate_id, gate_id.replace("_", " "), attested=True)
    values: dict[str, Any] = {}
    if "title" in table:
        values["title"] = str(table["title"])
    if "required" in table:
        if not isinstance(table["required"], bool):
            raise ConfigError(f"{where}: gates.{gate_id}.required must be true or false")
        values["required"] = table["required"]
    for name in ("nist_ai_rmf", "eu_ai_act"):
        if name in table:
            values[name] = tuple(str(v) for v in table[name])
    return replace(gate, **values)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the mesh shows about one agent, gathered by ``stack.gates``."""

    agent: AgentState
    now_ms: int
    policy: Mapping[str, Any] | None = None  # the operator's policy in force (None: none)
    policy_ref: str = ""  # "target vN hash" of that policy
    dependants: tuple[str, ...] = ()  # who a halt with dependants would reach, besides it
    killswitch_age_s: float | None = None
    agent_drill: DrillResult | None = None  # the last gates drill of this agent
    fleet_drill: DrillResult | None = None  # the last scheduled (canary) drill
    audit_retention_ms: int | None = None
    audit_cleanup: str | None = None
    audit_lag: Mapping[int, int] | None = None  # inbox partition -> records not yet audited
    escalation_holders: tuple[str, ...] = ()  # running agents offering the capability
    attestations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: Gate
    passed: bool
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate.id,
            "title": self.gate.title,
            "required": self.gate.required,
            "passed": self.passed,
            "evidence": self.evidence,
            "nist_ai_rmf": list(self.gate.nist_ai_rmf),
            "eu_ai_act": list(self.gate.eu_ai_act),
        }


def evaluate(profile: Profile, evidence: Evidence) -> tuple[GateResult, ...]:
    """Every gate of the profile, judged from the evidence."""
    results = []
    for gate in profile.gates:
        if gate.id in _CHECKS and not gate.attested:
            passed, why = _CHECKS[gate.id](profile, evidence)
        else:
            note = evidence.attestations.get(gate.id)
            passed = bool(note)
            why = f"attested: {note}" if note else f"not attested (--attest {gate.id}=NOTE)"
        results.append(GateResult(gate, passed, why))
    return tuple(results)


def failing(results: tuple[GateResult, ...]) -> tuple[str, ...]:
    """The required gates that did not pass."""
    return tuple(r.gate.id for r in results if r.gate.required and not r.passed)


def expires_at(profile: Profile, evidence: Evidence) -> int:
    """When a certification granted now lapses: after ``valid_for_s``, or earlier when the
    drill it rests on ages out."""
    until = evidence.now_ms + int(profile.valid_for_s * 1000)
    if evidence.agent_drill is not None:
        until = min(until, evidence.agent_drill.at_ms + int(profile.drill_max_age_s * 1000))
    return until


# -- the production rule ---------------------------------------------------------------------


def certified_for_production(agent: AgentState | None, now_ms: int) -> bool:
    """Certified for production at its current version, and not lapsed."""
    if agent is None or PRODUCTION not in agent.certifications:
        return False
    return agent.certified_until_ms is None or now_ms < agent.certified_until_ms


def production_refusal(
    sender_id: str, sender: AgentState | None, recipient_environment: str, now_ms: int
) -> str | None:
    """Why ``sender`` may not message an agent running in ``recipient_environment`` (None: it
    may). Only messages to a production agent need a certified sender."""
    if recipient_environment != PRODUCTION:
        return None
    if certified_for_production(sender, now_ms):
        return None
    if sender is None:
        return f"not certified for production: {sender_id!r} is not in the registry"
    if PRODUCTION in sender.certifications:
        why = f"the certification of version {sender.version} lapsed at {sender.certified_until_ms}"
    elif sender.gates_failing:
        why = f"gates failing: {', '.join(sender.gates_failing)}"
    else:
        why = f"version {sender.version} was never certified (run `mesh gates check {sender_id}`)"
    return (
        f"not certified for production: {why}; {sender_id!r} may message only staging agents "
        f"until `mesh gates certify` passes"
    )


# -- the built-in checks ---------------------------------------------------------------------

Check = tuple[bool, str]


def _blast_radius(profile: Profile, e: Evidence) -> Check:
    if e.policy is None:
        return False, "no operator policy is in force: recipients and tools are unbounded"
    unbounded = [k for k in ("allowed_recipients", "allowed_tools") if e.policy.get(k) is None]
    reach = f"a halt with dependants reaches {len(e.dependants)} other agent(s)"
    if e.dependants:
        reach += f" ({', '.join(e.dependants)})"
    if unbounded:
        return False, f"policy {e.policy_ref} leaves {' and '.join(unbounded)} unbounded; {reach}"
    if len(e.dependants) > profile.max_dependants:
        return False, f"{reach}, over the maximum of {profile.max_dependants}"
    return True, (
        f"policy {e.policy_ref}: {len(e.policy['allowed_recipients'])} recipient(s), "
        f"{len(e.policy['allowed_tools'])} tool(s); {reach} (max {profile.max_dependants})"
    )


def _spend_limits(profile: Profile, e: Evidence) -> Check:
    budget = None if e.policy is None else e.policy.get("budget_usd")
    if budget is None:
        return False, "no budget_usd in an operator policy: spend is not capped by the sidecar"
    window = e.policy.get("budget_window_s", 3600) if e.policy else 3600
    if e.killswitch_age_s is None:
        return False, f"budget ${budget} per {window}s, but the kill-switch has never heartbeat"
    if e.killswitch_age_s > 30:
        return False, f"the kill-switch's last heartbeat is {e.killswitch_age_s:.0f}s old"
    return True, (
        f"budget ${budget} per {window}s in policy {e.policy_ref}; kill-switch heartbeat "
        f"{e.killswitch_age_s:.0f}s ago"
    )


def _killswitch_tested(profile: Profile, e: Evidence) -> Check:
    drill = e.agent_drill
    if drill is None or drill.agent_version != e.agent.version:
        return False, (
            f"no drill of version {e.agent.version} (run `mesh gates drill {e.agent.agent_id}`)"
        )
    age_s = (e.now_ms - drill.at_ms) / 1000
    if not drill.ok:
        return False, f"the last drill of version {drill.agent_version} failed: {drill.failure}"
    if age_s > profile.drill_max_age_s:
        return False, f"the last drill is {age_s:.0f}s old (max {profile.drill_max_age_s:g}s)"
    if drill.halt_ms is None or drill.halt_ms > profile.drill_ack_ms:
        return False, f"the drill's halt took {drill.halt_ms} ms (bound {profile.drill_ack_ms:g})"
    fleet = e.fleet_drill
    if fleet is None or not fleet.ok:
        why = "has never run" if fleet is None else f"failed: {fleet.failure}"
        return False, f"the agent's drill passed, but the fleet's scheduled drill {why}"
    return True, (
        f"drill of v{drill.agent_version} {age_s:.0f}s ago: halt acknowledged in "
        f"{drill.halt_ms:.0f} ms, resumed in {drill.resume_ms or 0:.0f} ms (commands "
        f"{', '.join(drill.command_ids)}); fleet drill passing"
    )


def _rollback_plan(profile: Profile, e: Evidence) -> Check:
    earlier = [v for v in e.agent.certified_versions if v != e.agent.version]
    if earlier:
        return True, f"earlier certified version(s) to roll back to: {', '.join(earlier)}"
    if e.agent.rollback_note:
        return True, f"rollback note registered by the owner: {e.agent.rollback_note}"
    return False, (
        "no earlier certified version and no rollback note (`mesh sidecar run --rollback-note`, "
        "or rollback_note in the SDK's Agent)"
    )


def _logging(profile: Profile, e: Evidence) -> Check:
    if e.audit_retention_ms != -1 or e.audit_cleanup != "delete":
        return False, (
            f"the audit topic has retention.ms={e.audit_retention_ms} and "
            f"cleanup.policy={e.audit_cleanup}; the profile needs -1 and delete"
        )
    if e.audit_lag is None:
        return False, "the audit processor has not recorded the agent's inbox (is it running?)"
    worst = max(e.audit_lag.values(), default=0)
    if worst > profile.max_audit_lag:
        return False, f"the audit trails the inbox by {worst} records (max {profile.max_audit_lag})"
    return True, (
        f"audit retention infinite, never compacted; inbox audited over {len(e.audit_lag)} "
        f"partition(s), at most {worst} record(s) behind"
    )


def _escalation_path(profile: Profile, e: Evidence) -> Check:
    capability = profile.escalation_capability
    allowed = None if e.policy is None else e.policy.get("allowed_capabilities")
    if allowed is not None and capability not in allowed:
        return False, f"policy {e.policy_ref} does not let it address {capability!r}"
    if not e.escalation_holders:
        return False, f"no running agent offers the escalation capability {capability!r}"
    return True, f"{capability!r} offered by {', '.join(e.escalation_holders)}"


def _ownership(profile: Profile, e: Evidence) -> Check:
    skills = capabilities(e.agent)
    if not e.agent.owner.strip():
        return False, "no owner declared"
    if not skills:
        return False, f"owner {e.agent.owner!r}, but its card declares no skill (no contract)"
    return True, f"owner {e.agent.owner!r}; skills {', '.join(skills)}"


_CHECKS = {
    "blast_radius": _blast_radius,
    "spend_limits": _spend_limits,
    "killswitch_tested": _killswitch_tested,
    "rollback_plan": _rollback_plan,
    "logging": _logging,
    "escalation_path": _escalation_path,
    "ownership": _ownership,
}
