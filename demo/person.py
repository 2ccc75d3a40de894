"""The person at the demo's help desk: answers every escalation waiting on
``mesh.approvals.v1`` exactly as `mesh escalations approve ID --note ...` does (the same
adapter, signed with this host's operator key), a moment after it arrives.

In a real deployment a person runs that command (or uses the console); here the demo plays
the person so the run needs no one at the keyboard, while the path it exercises is the real
one: the agent parks the task, the answer is an operator-signed, single-use decision bound to
the exact request, and the agent goes on with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mesh.adapters.approvals import decide, read_approvals
from mesh.adapters.keyfiles import trust_anchors
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import PublicKeys
from mesh.errors import MeshError
from mesh.settings import Cluster

__all__ = ["answer_escalations"]

NOTE = "signed off by the help desk (the demo's person)"


async def answer_escalations(
    cluster: Cluster, serde: Serde, say: Callable[[str], None], every_s: float = 0.3
) -> None:
    """Approve each pending escalation until cancelled."""
    codec = MessageCodec(serde, PublicKeys())
    signers = trust_anchors(cluster.settings)
    while True:
        log = await asyncio.to_thread(read_approvals, cluster, codec, signers)
        now_ms = int(time.time() * 1000)
        for request in log.book.requests.values():
            if request.is_escalation and request.state(now_ms) == "pending":
                try:
                    await asyncio.to_thread(
                        decide, cluster, codec, signers, request.request_id, True, NOTE, 300.0
                    )
                except MeshError as exc:  # answered meanwhile: nothing to do
                    say(f"person      !! {exc}")
                    continue
                say(f"person      approved escalation {request.request_id[:8]} of "
                    f"{request.agent_id}")  # fmt: skip
        await asyncio.sleep(every_s)
