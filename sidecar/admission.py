"""What the receiving side enforces, whatever the sender's sidecar did (pure).

A sender's sidecar checks its policy before anything leaves; a sender that bypasses its
sidecar (its own Kafka client, a sidecar it patched) still has to sign with the key the mesh
vouches for, and the receiving sidecar checks again before the agent sees anything:

* **the sender's operator policy**: a message to a recipient the policy in force for the
  sender does not allow is refused (``recipient_not_allowed``), and so is one further down its
  chain than the policy's ``max_hop_count`` (``hop_limit``), so a policy binds an agent
  even if it never asks its own sidecar. The receiver judges by the policies it has read; a
  policy widened a moment ago and not yet read here refuses once, on the record.
* **replays**: inbox topics keep the broker's append time (``LogAppendTime``), which no
  producer can set. A message made at ``created_at`` is appended within moments; one whose
  append time is more than ``max_skew_ms`` away from its creation was produced again later (a
  captured message replayed) or carries an absurd clock, and is refused (``replayed``). On a
  topic without append times (an inbox made before this rule), a creation time further than
  that in the future is refused. Message ids already delivered are skipped as duplicates
  (``sidecar.inbox``).

Both refusals go to the dead-letter topic with the reason and the original bytes.
"""

from __future__ import annotations

from mesh.domain.envelope import Envelope
from mesh.errors import PolicyViolationError, ReplayError
from sidecar.policy import AgentPolicy

__all__ = ["check_replay", "check_sender_policy"]


def check_sender_policy(
    envelope: Envelope, recipient: str, sender_policy: AgentPolicy | None, where: str
) -> None:
    """Refuse a message the sender's operator policy (``where`` names it) does not allow: to
    this recipient, or this far down its chain."""
    if sender_policy is not None and envelope.hop_count > sender_policy.max_hop_count:
        raise PolicyViolationError(
            "hop_limit",
            f"{envelope.sender!r} sent hop {envelope.hop_count} of a chain, over its operator "
            f"policy's limit of {sender_policy.max_hop_count} ({where}); refused on receipt",
        )
    allowed = None if sender_policy is None else sender_policy.allowed_recipients
    if allowed is not None and recipient not in allowed:
        raise PolicyViolationError(
            "recipient_not_allowed",
            f"{envelope.sender!r} may not message {recipient!r} under its operator policy "
            f"({where}); refused on receipt: the sender went around its own sidecar's check",
        )


def check_replay(
    envelope: Envelope, appended_ms: int | None, now_ms: int, max_skew_ms: int
) -> None:
    """Refuse a message appended far from when it was made, or made in the far future."""
    created = envelope.created_at_ms
    if appended_ms is not None:
        gap = appended_ms - created
        if abs(gap) > max_skew_ms:
            raise ReplayError(
                f"message {envelope.message_id} from {envelope.sender!r} was made at {created} "
                f"and appended to the inbox at {appended_ms}, {gap / 1000:+.1f}s apart (bound "
                f"{max_skew_ms / 1000:g}s): a replay of a captured message, or a clock far off"
            )
        return
    if created - now_ms > max_skew_ms:
        raise ReplayError(
            f"message {envelope.message_id} from {envelope.sender!r} claims to be made "
            f"{(created - now_ms) / 1000:.1f}s in the future (bound {max_skew_ms / 1000:g}s)"
        )
