"""Tools authorized before they run: single-use permits. Pure: no client, no clock of its own.

An agent used to run a tool and *report* it afterwards, so a policy could only refuse the
report. Now the agent asks its sidecar for a permit first (``Sidecar.permit_tool``, ``POST
/v1/tools/permits``, the SDK's ``async with mesh.tool(...)``). The sidecar grants one only if

* the tool is allowed (``allowed_tools``);
* its arguments fit the tool's constraints in the policy (``tools.NAME.arguments``, a JSON
  Schema, draft 2020-12), so a disallowed argument is refused *before* the tool runs;
* the cost asked for is within the tool's ``max_cost_usd``, and the budget can hold it: the
  amount is **reserved** in the spend window at once, so two permits cannot both spend the
  last dollar;
* the chain it serves is not halted, and the agent may start a chain if it names no cause.

A permit is single-use and short-lived (``permit_ttl_s``): the completion report must quote
it (:meth:`PermitBook.redeem`) with the same tool and the same arguments; a report quoting no
permit, a spent one, an expired one, or one for another call is a violation, refused and
reported on telemetry. When the report comes, the reservation is replaced by what the call
actually cost. An unused permit expires and its reservation is released.

Every grant is written on telemetry as ``TOOL_PERMIT`` with the permit id, the arguments'
digest and the hash of the operator policy that decided, so the audit shows who was allowed
to do what, under which policy, before it was done.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mesh.domain.envelope import Envelope
from mesh.errors import PolicyViolationError
from sidecar.constraints import violation

__all__ = ["Permit", "PermitBook", "arguments_digest", "check_arguments"]


def arguments_digest(arguments: Any) -> str:
    """SHA-256 hex of the canonical JSON of a tool's arguments."""
    return hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Permit:
    permit_id: str
    tool: str
    arguments_digest: str
    reserved_usd: float
    expires_at: float
    policy_hash: str | None
    #: The delivered message whose chain the call serves (None: the agent's own work).
    cause: Envelope | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "permit_id": self.permit_id,
            "tool": self.tool,
            "arguments_digest": self.arguments_digest,
            "reserved_usd": self.reserved_usd,
            "expires_at": self.expires_at,
            "policy_hash": self.policy_hash,
            "correlation_id": None if self.cause is None else self.cause.correlation_id,
        }


class PermitBook:
    """The permits granted and not yet redeemed or expired, with what each one reserved."""

    def __init__(self) -> None:
        self._open: dict[str, Permit] = {}
        self._spent: dict[str, str] = {}  # permit id -> tool: to say "used already"

    @property
    def reserved_usd(self) -> float:
        return sum(p.reserved_usd for p in self._open.values())

    def __len__(self) -> int:
        return len(self._open)

    def grant(
        self,
        tool: str,
        digest: str,
        reserved_usd: float,
        now: float,
        ttl_s: float,
        policy_hash: str | None,
        cause: Envelope | None = None,
    ) -> Permit:
        permit = Permit(
            f"permit-{uuid.uuid4().hex}",
            tool,
            digest,
            reserved_usd,
            now + ttl_s,
            policy_hash,
            cause,
        )
        self._open[permit.permit_id] = permit
        return permit

    def redeem(self, permit_id: str | None, tool: str, digest: str | None, now: float) -> Permit:
        """The permit for this completed call, now spent; PolicyViolationError (rule
        ``no_permit``, ``permit_used``, ``permit_expired`` or ``permit_mismatch``) if the call
        ran without a valid permit of its own."""
        if not permit_id:
            raise PolicyViolationError(
                "no_permit",
                f"tool {tool!r} was reported without a permit: a tool runs only under a permit "
                "granted before the call (POST /v1/tools/permits, or Sidecar.permit_tool)",
            )
        permit = self._open.get(permit_id)
        if permit is None:
            if permit_id in self._spent:
                raise PolicyViolationError(
                    "permit_used", f"permit {permit_id} was used already; a permit is single-use"
                )
            raise PolicyViolationError(
                "no_permit", f"permit {permit_id} was not granted by this sidecar (or expired)"
            )
        if permit.tool != tool or (digest is not None and digest != permit.arguments_digest):
            what = "tool" if permit.tool != tool else "arguments"
            raise PolicyViolationError(
                "permit_mismatch",
                f"permit {permit_id} was granted for {permit.tool!r} with other {what}; a permit "
                "covers exactly the call it was asked for",
            )
        del self._open[permit_id]
        self._spent[permit_id] = tool
        if now > permit.expires_at:
            raise PolicyViolationError(
                "permit_expired",
                f"permit {permit_id} for {tool!r} expired {now - permit.expires_at:.1f}s before "
                "the call was reported; ask for a permit just before the call",
            )
        return permit

    def expire(self, now: float) -> list[Permit]:
        """Drop the permits past their time (their reservations are released)."""
        gone = [p for p in self._open.values() if now > p.expires_at]
        for permit in gone:
            del self._open[permit.permit_id]
        if len(self._spent) > 10_000:  # remember the recent ones only
            for old in list(self._spent)[:5_000]:
                del self._spent[old]
        return gone


def check_arguments(tool: str, schemas: tuple[Mapping[str, Any], ...], arguments: Any) -> None:
    """Refuse arguments outside every constraint the policy sets on ``tool``."""
    problem = violation(schemas, arguments)
    if problem is not None:
        raise PolicyViolationError(
            "arguments_not_allowed",
            f"the arguments of {tool!r} are outside its constraints in the policy: "
            f"{problem}; the tool must not run",
        )
