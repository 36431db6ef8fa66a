"""Host memory while timing: resident set size after warm-up and its peak during the timed calls.

A runner or C-core leak shows as a peak that keeps climbing above the post-warm-up value;
`bench` reports both so a long run (`--iters 10000`) doubles as a leak check. The
process-lifetime peak (ru_maxrss) cannot show this, because imports and model loading
set it before the loop starts.
"""
from __future__ import annotations

import os
import resource
import sys
import threading
from typing import Optional

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_mb() -> Optional[float]:
    """This process's resident memory now (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return None


def lifetime_peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 2)


class RssSampler:
    """Samples current RSS on a thread every ``interval_s`` while in the ``with`` block; ``peak_mb`` after."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak_mb: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        value = current_rss_mb()
        if value is not None and (self.peak_mb is None or value > self.peak_mb):
            self.peak_mb = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
