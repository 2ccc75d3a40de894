"""The message the agent's code is serving (a mixin of :class:`sidecar.core.Sidecar`).

The SDK wraps every handler in :meth:`Serving.serving`: while it runs, the sends, permits and
reports that name no cause continue the delivered message's chain (its conversation, task and
correlation) and its trace (a ``handle`` span, :mod:`mesh.adapters.tracing`), without the
agent's code naming the message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from mesh.adapters import tracing
from mesh.adapters.tracing import SpanKind
from mesh.domain.envelope import Envelope
from mesh.errors import PolicyViolationError
from sidecar.delivery import Delivery
from sidecar.inbox import Inbox
from sidecar.tools import Cause

__all__ = ["Serving"]

#: The delivered message the agent's code is handling (the SDK sets it around a handler), so
#: its sends, permits and reports continue that message's chain without naming it.
_serving: ContextVar[Envelope | None] = ContextVar("mesh_serving", default=None)


class Serving:
    agent_id: str
    inbox: Inbox

    @contextlib.contextmanager
    def serving(self, delivery: Delivery | None) -> Iterator[None]:
        """While the agent's code handles ``delivery``: its sends, permits and reports that
        name no cause serve this message's chain (the SDK wraps every handler in it)."""
        token = _serving.set(None if delivery is None else delivery.envelope)
        try:
            if delivery is None:
                yield
                return
            envelope, name = delivery.envelope, f"handle {delivery.subject}"
            attributes = {"mesh.agent": self.agent_id}
            with tracing.span(name, SpanKind.INTERNAL, envelope.traceparent, attributes):
                yield
        finally:
            _serving.reset(token)

    def _traceparent_of(self, cause: Cause) -> str | None:
        """The trace a send continues: the message it replies to (or is handling)."""
        if isinstance(cause, Delivery):
            return cause.envelope.traceparent
        envelope = _serving.get() if cause is None else self.inbox.recent.get(cause)
        return None if envelope is None else envelope.traceparent

    def _cause(self, cause: Cause) -> Envelope | None:
        """The delivered message some work serves: named (a Delivery or a recently delivered
        message id), else the one being handled (:meth:`serving`), else none (a new chain)."""
        if isinstance(cause, Delivery):
            return cause.envelope
        if cause is None:
            return _serving.get()
        found = self.inbox.recent.get(cause)
        if found is None:
            raise PolicyViolationError(
                "unknown_cause", f"no recently delivered message {cause!r} to serve or reply to"
            )
        return found
