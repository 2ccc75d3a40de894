"""Key rotation by the agent itself (a mixin of :class:`sidecar.core.Sidecar`).

The sidecar moves its agent to a fresh key with ``KeyRotated``, signed with the current key
and carrying the new key's proof; the registry countersigns it into the key directory
(``mesh.keys.v1``), and only then does the sidecar sign with the new key and keep it in the key
file (docs/security/keys.md). A message signed with the old key and read after the rotation is
refused like any other.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mesh.adapters.keyfiles import replace_key
from mesh.domain.identity import AgentKey
from mesh.domain.topics import REGISTRY_EVENTS
from mesh.errors import KafkaUnavailableError
from sidecar import facts
from sidecar.outbox import Outbox
from sidecar.plane import Plane

__all__ = ["KeyRotation"]


class KeyRotation:
    agent_id: str
    key: AgentKey
    key_file: Path
    plane: Plane
    outbox: Outbox
    #: The Sidecar's: seal with the agent's key, write and wait.
    _write_event: Callable[..., Awaitable[None]]

    async def rotate_key(self, reason: str = "scheduled rotation", wait_s: float = 30.0) -> None:
        """Move this agent to a fresh key: ``KeyRotated`` signed with the current key, carrying
        the new key's proof; once the registry's countersigned statement is read back, sign
        with the new key and keep it in the key file (docs/security/keys.md). A message signed
        with the old key and read after the rotation is refused, like any other."""
        new = AgentKey.generate(self.agent_id)
        before = self.plane.keys.get(self.agent_id)
        serial = 0 if before is None else before.serial
        body = facts.key_rotated(self.agent_id, new, reason)
        await self._write_event(REGISTRY_EVENTS, "mesh.registry.KeyRotated", body)
        deadline = time.monotonic() + wait_s
        while True:
            now = self.plane.keys.get(self.agent_id)
            if now is not None and now.serial > serial and now.public_key == new.public_bytes:
                break
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"the registry did not record the key rotation of {self.agent_id!r} within "
                    f"{wait_s:.0f}s; the old key stays in use (is the registry processor "
                    "running? a refused rotation is on mesh.dlq.v1)"
                )
            await self.plane.wait_changed(deadline - time.monotonic())
        replace_key(self.key_file, new)
        self.key = self.outbox.key = new
