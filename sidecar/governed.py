"""What governs one sidecar's agent: may it act, which policy binds it, and what the receiving
side checks of others (a mixin of :class:`sidecar.core.Sidecar`, so the facade keeps one
surface; :class:`sidecar.reports.Reports` asks these questions through it).

* ``check_may_act``: fail closed (control followed and current, no halt in force).
* ``enforced``: the operator's policy in force narrowed by the agent's own; in production,
  with no operator policy, **deny** (``no_policy``).
* ``_admission``: a verified incoming message is refused if it is a replay, or if the sender's
  operator policy does not allow this recipient (:mod:`sidecar.admission`), or if this agent
  runs in production and the sender is not certified for it (:mod:`mesh.domain.gates`).
* ``check_certified``: the same rule on the sending side.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from mesh.domain.control import is_mesh_process
from mesh.domain.envelope import Envelope
from mesh.domain.gates import production_refusal
from mesh.domain.identity import AgentKey
from mesh.domain.policies import PolicyInForce
from mesh.domain.topics import REGISTRY_EVENTS
from mesh.errors import PolicyViolationError, ProcessorError
from mesh.settings import Settings
from sidecar.admission import check_replay, check_sender_policy
from sidecar.halts import ControlView
from sidecar.plane import Plane
from sidecar.policy import AgentPolicy
from sidecar.spec import AgentSpec

__all__ = ["Governed"]


class Governed:
    agent_id: str
    settings: Settings
    spec: AgentSpec
    plane: Plane
    control: ControlView
    clock: Callable[[], float]
    key: AgentKey
    #: The Sidecar's: seal with the agent's key, write and wait.
    _write_event: Callable[..., Awaitable[None]]

    def check_may_act(self) -> None:
        """Fail closed: raise unless control is followed and no halt is in force."""
        if not self.plane.applying_changes:
            raise ProcessorError(f"the sidecar of {self.agent_id!r} is not started")
        self.control.check(time.monotonic())

    @property
    def operator_policy(self) -> PolicyInForce | None:
        """The operator's policy in force for this agent (``mesh.policies.v1``), if any."""
        return self.plane.operator_policy()

    @property
    def policy(self) -> AgentPolicy:
        """What this sidecar enforces (:meth:`enforced`)."""
        return self.enforced()

    def enforced(self) -> AgentPolicy:
        """The operator's policy in force narrowed by the agent's own
        (:meth:`sidecar.plane.Plane.policy`). With no operator policy, the production profile
        **denies** (rule ``no_policy``): an agent cannot set its own limits there; only the
        development profile lets its own policy stand in."""
        if self.settings.profile == "production" and self.plane.operator_policy() is None:
            raise PolicyViolationError(
                "no_policy",
                f"no operator policy is in force for agent {self.agent_id!r} (for its id, a "
                "capability, or the fleet default '*'), and the production profile denies by "
                "default; an operator publishes one with `mesh policy set` "
                "(MESH_PROFILE=development lets the agent's own policy stand in)",
            )
        return self.plane.policy(self.spec.policy)

    def policy_source(self) -> str:
        """Where the limits enforced come from: ``operator``, ``agent (development)``, or
        ``none (production denies)``."""
        if self.plane.operator_policy() is not None:
            return "operator"
        return (
            "agent (development)"
            if self.settings.profile == "development"
            else ("none (production denies)")
        )

    async def move_to(self, environment: str) -> None:
        """Run in another environment from now on (``staging`` -> ``production``: a version
        certified in staging is promoted): registered again, the same key and version, so a
        certification of this version still holds."""
        self.spec = replace(self.spec, environment=environment)
        registration = self.spec.registration(self.key.public_bytes, self.settings.profile)
        await self._write_event(REGISTRY_EVENTS, "mesh.registry.AgentRegistered", registration)

    def check_certified(self, recipient: str) -> None:
        """A message to a production agent needs this agent certified for production at its
        current version (:mod:`mesh.domain.gates`); refuse it otherwise (``not_certified``)."""
        target = self.plane.agents.get(recipient)
        if target is None:
            return
        now_ms = int(self.clock() * 1000)
        own = self.plane.agents.get(self.agent_id)
        refusal = production_refusal(self.agent_id, own, target.environment, now_ms)
        if refusal is not None:
            raise PolicyViolationError("not_certified", refusal)

    def halts(self) -> dict[str, dict[str, Any]]:
        return self.control.book.halts

    def check_throttle(self, kind: str, now_ms: int) -> None:
        self.plane.check_throttle(kind, now_ms)

    def killswitch_age_s(self) -> float | None:
        return self.plane.killswitch_age_s()

    def _admission(
        self,
        envelope: Envelope,
        appended_ms: int | None,
        subject: str = "",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        """The receiving side's own checks (:mod:`sidecar.admission`): a replay, and what the
        sender's operator policy does not allow (a recipient, a hop, a message's content)."""
        check_replay(
            envelope, appended_ms, int(self.clock() * 1000), self.settings.max_clock_skew_ms
        )
        if is_mesh_process(envelope.sender):
            return
        sender = self.plane.agents.get(envelope.sender)
        now_ms = int(self.clock() * 1000)
        refusal = production_refusal(envelope.sender, sender, self.spec.environment, now_ms)
        if refusal is not None:
            raise PolicyViolationError("not_certified", f"{refusal}; refused on receipt")
        in_force, policy = self.plane.sender_policy(envelope.sender)
        if in_force is not None:
            where = f"{in_force.target} v{in_force.version} {in_force.hash[:16]}"
            check_sender_policy(envelope, self.agent_id, policy, where)
            if policy is not None and body is not None:
                who = f"{envelope.sender!r}'s operator policy ({where}); refused on receipt"
                policy.check_message(subject, body, who)
