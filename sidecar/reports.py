"""What an agent spends and does, asked for and reported through its sidecar: tool permits,
tool, model and error reports, and refusals (the sidecar's half of ``docs/policy.md``).

Every spend-bearing step is checked against the policy in force (:mod:`sidecar.policy`) and the
spend window, and written on telemetry signed by the agent, **in its chain**: a report or a
permit that serves a delivered message carries that message's correlation id, hop count and
causation (``cause``), so the kill-switch can bound the chain across every agent it reaches.
The agent names the message it works on; it cannot invent a chain, since a cause must be a
message its sidecar delivered (``Sidecar._cause``).

Refusals are written too (``SEND_REFUSED``), with the rule, the arguments' digest, the permit
and the hash of the operator policy that decided, so the audit shows which rule refused what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mesh.domain.control import chain_halt
from mesh.domain.envelope import Envelope
from mesh.domain.policies import PolicyInForce
from mesh.errors import AgentRefusedError, MeshError, PolicyViolationError
from sidecar.approvals import Approvals
from sidecar.inbox import Counters
from sidecar.outbox import Outbox
from sidecar.permits import Permit, PermitBook, arguments_digest
from sidecar.policy import AgentPolicy
from sidecar.spend import SpendWindow
from sidecar.telemetry import Kind

__all__ = ["Reports"]


class _Plane(Protocol):
    """What reports need from the sidecar: the policy, control and the kill-switch's age."""

    def enforced(self) -> AgentPolicy: ...

    @property
    def operator_policy(self) -> PolicyInForce | None: ...

    def check_may_act(self) -> None: ...

    def halts(self) -> dict[str, dict[str, Any]]: ...

    def killswitch_age_s(self) -> float | None: ...

    def check_throttle(self, kind: str, now_ms: int) -> None: ...


class Reports:
    def __init__(
        self, outbox: Outbox, counters: Counters, plane: _Plane, clock: Callable[[], float]
    ) -> None:
        self.outbox, self.counters, self.plane, self.clock = outbox, counters, plane, clock
        self.permits = PermitBook()
        self.spend = SpendWindow(AgentPolicy())
        self.approvals: Approvals | None = None  # set by the sidecar (human approvals)

    def fresh_window(self, policy: AgentPolicy) -> None:
        """A resume starts a fresh spend window (permits granted before it still hold theirs)."""
        reserved = self.spend.reserved
        self.spend = SpendWindow(policy)
        self.spend.reserved = reserved

    # -- permits ---------------------------------------------------------------------------

    async def permit(
        self,
        tool: str,
        arguments: Any,
        cost_usd: float,
        cause: Envelope | None,
        wait_approval_s: float = 0.0,
    ) -> Permit:
        """A single-use permit for one call of ``tool`` with ``arguments`` (sidecar.permits),
        handed to the producer before it is returned (its delivery is confirmed with the call's
        report, which follows it on the same partition); refused (and reported) otherwise."""
        digest = arguments_digest(arguments)
        approved_by = ""
        try:
            self.plane.check_may_act()
            policy = self.plane.enforced()
            in_force = self.plane.operator_policy
            policy_hash = None if in_force is None else in_force.hash
            policy.check_chain_start(cause is not None)
            self.check_chain(cause)
            self.plane.check_throttle(Kind.TOOL_CALL, int(self.clock() * 1000))
            reserve = policy.check_permit(tool, arguments, cost_usd)
            if reserve > 0:
                policy.check_killswitch(self.plane.killswitch_age_s())
            now = self.clock()
            self._release_expired(now)
            self.spend.policy = policy
            self.spend.reserve(reserve, now)
        except AgentRefusedError as exc:
            await self.refused(tool, exc, about=cause, arguments_digest=digest)
            raise
        rule = policy.tools.get(tool)
        if rule is not None and rule.requires_approval and self.approvals is not None:
            try:
                approval = await self.approvals.approved(
                    tool, arguments, digest, reserve, cause, policy_hash, wait_approval_s,
                    rule.approvers,
                )  # fmt: skip
            except AgentRefusedError as exc:
                self.spend.release(reserve)
                await self.refused(tool, exc, about=cause, arguments_digest=digest)
                raise
            approved_by = f"; approved by {approval.decided_by} ({approval.request_id})"
        permit = self.permits.grant(
            tool, digest, reserve, now, policy.permit_ttl_s, policy_hash, cause
        )
        granted = self.outbox.telemetry(
            Kind.TOOL_PERMIT,
            tool,
            about=cause,
            arguments_digest=digest,
            permit_id=permit.permit_id,
            policy_hash=policy_hash,
            detail=f"reserved ${reserve:.4f}; valid {policy.permit_ttl_s:g}s{approved_by}",
        )
        try:  # not awaited: the call's report, awaited, follows it on the same partition
            await self.outbox.write_soon(granted)
        except MeshError:
            self.permits.redeem(permit.permit_id, tool, digest, now)
            self.spend.release(reserve)
            raise
        return permit

    async def tool_call(
        self,
        tool: str,
        arguments: Any,
        permit_id: str | None,
        *,
        cost_usd: float | None,
        latency_ms: float,
        ok: bool,
        detail: str | None,
    ) -> None:
        """Report a call made under ``permit_id``: recorded with what it actually cost; a call
        reported without a valid permit of its own is a violation (refused and reported)."""
        digest = None if arguments is None else arguments_digest(arguments)
        now = self.clock()
        try:
            permit = self.permits.redeem(permit_id, tool, digest, now)
        except PolicyViolationError as exc:
            await self.refused(tool, exc, arguments_digest=digest, permit_id=permit_id)
            raise
        spent = permit.reserved_usd if cost_usd is None else cost_usd
        if spent < 0:
            spent = 0.0
        self.spend.settle(permit.reserved_usd, spent, now)
        if spent > permit.reserved_usd + 1e-12 and permit.reserved_usd > 0:
            over = f"cost ${spent:.4f} over the permit's ${permit.reserved_usd:.4f}"
            detail = over if not detail else f"{detail}; {over}"
        self.counters.spend_usd += spent
        done = self.outbox.telemetry(
            Kind.TOOL_CALL,
            tool,
            about=permit.cause,
            cost_usd=spent,
            arguments_digest=permit.arguments_digest,
            permit_id=permit.permit_id,
            policy_hash=permit.policy_hash,
            latency_ms=latency_ms,
            ok=ok,
            detail=detail,
        )
        await self.outbox.write(done)

    # -- model calls and errors ------------------------------------------------------------

    async def report(
        self, kind: Kind, name: str, cost_usd: float, cause: Envelope | None, **fields: Any
    ) -> None:
        """A model call or an error: spend checked against the policy, then written."""
        in_force = None
        try:
            self.plane.check_may_act()
            policy = self.plane.enforced()
            in_force = self.plane.operator_policy
            if cost_usd < 0:
                raise PolicyViolationError("bad_cost", f"cost_usd must be >= 0, not {cost_usd}")
            if kind is Kind.MODEL_CALL:
                self.plane.check_throttle(kind, int(self.clock() * 1000))
            if cost_usd > 0:
                policy.check_killswitch(self.plane.killswitch_age_s())
            now = self.clock()
            self._release_expired(now)
            self.spend.policy = policy
            self.spend.admit(cost_usd, now)
        except AgentRefusedError as exc:
            await self.refused(name, exc, about=cause)
            raise
        self.counters.spend_usd += cost_usd
        policy_hash = None if in_force is None else in_force.hash
        record = self.outbox.telemetry(
            kind, name, about=cause, cost_usd=cost_usd, policy_hash=policy_hash, **fields
        )
        await self.outbox.write(record)

    # -- chains and refusals ---------------------------------------------------------------

    def check_chain(self, cause: Envelope | None) -> None:
        """Refuse work for a chain the kill-switch or an operator halted."""
        if cause is None:
            return
        halt = chain_halt(self.plane.halts(), cause.correlation_id)
        if halt is not None:
            raise PolicyViolationError(
                "chain_halted",
                f"chain {cause.correlation_id} is halted by {halt['rule']}: {halt['reason']}; "
                "nothing more is done for it (other chains go on)",
            )

    async def refused(
        self,
        what: str,
        exc: MeshError,
        peer: str | None = None,
        about: Envelope | None = None,
        **fields: Any,
    ) -> None:
        """Report a refusal: the rule, and the operator policy in force when it was refused."""
        self.counters.refused += 1
        rule = getattr(exc, "rule", exc.code)
        self.counters.refused_by_rule[rule] = self.counters.refused_by_rule.get(rule, 0) + 1
        detail = f"{rule}: {exc}"
        in_force = self.plane.operator_policy
        if in_force is not None:
            detail += f" [policy {in_force.target} v{in_force.version} {in_force.hash[:16]}]"
            fields.setdefault("policy_hash", in_force.hash)
        record = self.outbox.telemetry(
            Kind.SEND_REFUSED, what, about=about, peer=peer, ok=False, detail=detail, rule=rule,
            **fields,
        )  # fmt: skip
        await self.outbox.write(record)

    def _release_expired(self, now: float) -> None:
        for permit in self.permits.expire(now):
            self.spend.release(permit.reserved_usd)
