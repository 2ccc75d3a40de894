"""Where a process's CPU time goes, by bucket, from py-spy's samples.

py-spy samples a process from outside (no GIL, no per-call cost), so the shares are not skewed
the way cProfile (a fixed cost per Python call) or an in-process sampling thread (which gets the
GIL exactly when a C call such as Ed25519 releases it) skew them. Idle threads (waiting in
``epoll``) are not sampled. Each sample is filed under the first bucket found walking out from
the innermost frame, so a C call counts for the Python function that made it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


class Spy:
    """``py-spy record`` attached to ``pid`` until :meth:`stop`."""

    def __init__(self, pid: int, buckets: Sequence[tuple[str, str]], rate: int = 500) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise RuntimeError("py-spy is not installed; run scripts/install (it is a dev tool)")
        self.buckets = buckets
        self.out = Path(tempfile.mkdtemp(prefix="mesh-spy-")) / f"{pid}.txt"
        self._proc = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--full-filenames", "--nonblocking", "--output", str(self.out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self) -> Counter[str]:
        """Samples per bucket."""
        self._proc.send_signal(signal.SIGINT)
        _, err = self._proc.communicate(timeout=60)
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no samples: {err.decode(errors='replace')}")
        counts: Counter[str] = Counter()
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            counts[classify(stack.split(";"), self.buckets)] += int(n)
        return counts


def classify(frames: Sequence[str], buckets: Sequence[tuple[str, str]]) -> str:
    for frame in reversed(frames):
        for needle, bucket in buckets:
            if needle in frame:
                return bucket
    return "rest"


def shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {bucket: n / total for bucket, n in counts.items()}
