"""A sampling profiler for one thread: where its busy time goes, by bucket.

cProfile charges a fixed cost to every Python call, so pure-Python code (aiokafka, asyncio)
looks several times dearer than C calls (Ed25519, fastavro) and the shares it reports are
wrong. This samples the thread's stack every ``interval_s`` instead and files each sample
under the first bucket found walking out from the innermost frame; samples taken while the
thread waits in the event loop's ``select`` are idle and not counted. The busy shares,
multiplied by the CPU time measured without the sampler, give microseconds per message.

The sampler needs the GIL to look, and a waiting thread gets it at the sampled thread's next
release: with the default 5 ms switch interval that is almost always a C call that releases
it (Ed25519 in libsodium, a socket), so those would soak up the samples. While sampling, the
switch interval is 10 us, so the GIL changes hands at the next bytecode boundary instead.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Sequence
from types import FrameType

IDLE = "idle"


class Sampler:
    def __init__(
        self, buckets: Sequence[tuple[str, str]], interval_s: float = 0.001, default: str = "rest"
    ) -> None:
        self.buckets, self.interval_s, self.default = buckets, interval_s, default
        self.counts: Counter[str] = Counter()
        self._switch = sys.getswitchinterval()
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._switch)

    def shares(self) -> dict[str, float]:
        """Each bucket's fraction of the busy samples."""
        busy = {k: v for k, v in self.counts.items() if k != IDLE}
        total = sum(busy.values()) or 1
        return {k: v / total for k, v in busy.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            frame = sys._current_frames().get(self._target)
            if frame is not None:
                self.counts[self.classify(frame)] += 1

    def classify(self, frame: FrameType | None) -> str:
        innermost = True
        while frame is not None:
            where = f"{frame.f_code.co_filename}:{frame.f_code.co_name}"
            if innermost and where.endswith("selectors.py:select"):
                return IDLE
            innermost = False
            for needle, bucket in self.buckets:
                if needle in where:
                    return bucket
            frame = frame.f_back
        return self.default
