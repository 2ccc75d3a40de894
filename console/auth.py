"""Who may use the console: two login tokens, written owner-only into the state directory.

* ``console/operator.token``: watch, halt and resume (signed with this host's operator key).
* ``console/viewer.token``: watch only; a halt or resume is refused (403).

A token is presented once as ``/?token=...`` (then kept in an HttpOnly, SameSite=Strict
cookie) or on every request as ``Authorization: Bearer ...``; anything else gets 401. A
state-changing request must also carry ``X-CSRF-Token``: an HMAC of the session's token that
only the console's own page holds (in a ``<meta>`` tag), so another site cannot forge a halt
through the operator's browser.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OPERATOR", "VIEWER", "Tokens", "csrf_for", "load_tokens"]

OPERATOR = "operator"
VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Tokens:
    operator: str
    viewer: str

    def role_of(self, presented: str | None) -> str | None:
        """The role a presented token grants (None: none)."""
        if not presented:
            return None
        for role, token in ((OPERATOR, self.operator), (VIEWER, self.viewer)):
            if hmac.compare_digest(presented.encode(), token.encode()):
                return role
        return None


def load_tokens(state_dir: Path) -> Tokens:
    """The console's tokens, each created on first use (mode 0600)."""
    folder = state_dir / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return Tokens(_token(folder / "operator.token"), _token(folder / "viewer.token"))


def _token(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), b"mesh-console-csrf", hashlib.sha256).hexdigest()
