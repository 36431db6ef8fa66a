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
from typing import Callable, Optional, Tuple

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


def cuda_free_memory_reader() -> Optional[Tuple[Callable[[], int], str]]:
    """(function returning the GPU's free bytes, what it calls) from cudaMemGetInfo, or None where nothing can read it.

    PyTorch when it is already loaded (the PyTorch runner), else the system's libcudart as
    the TensorRT runner reaches it (Polygraphy's ctypes wrapper), else PyTorch imported for
    the purpose. The figure is device-wide: every process and
    context on the GPU moves it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return (lambda: int(torch.cuda.mem_get_info()[0])), "cudaMemGetInfo (torch.cuda.mem_get_info)"
    try:
        from edgeseg.runtime.cuda_device import free_bytes

        free_bytes()  # no GPU, no driver or no Polygraphy: fall through to PyTorch
        return free_bytes, "cudaMemGetInfo (the system's libcudart, through Polygraphy's CUDA wrapper)"
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return (lambda: int(torch.cuda.mem_get_info()[0])), "cudaMemGetInfo (torch.cuda.mem_get_info)"
    except ImportError:
        pass
    return None


class DeviceMemory:
    """GPU memory a runner holds: free memory before it is activated minus the lowest free reading after.

    ``mark()`` is called after each phase (warm-up, timing, the accuracy pass). Allocator
    caches and TensorRT's and ONNX Runtime's arenas only grow while a runner is active, so
    the lowest reading is what the runner held at its largest: weights, activations,
    workspace and caches, whatever the backend reports itself. A transient allocation
    freed between two marks is not seen.
    """

    def __init__(self, reader: Optional[Tuple[Callable[[], int], str]]):
        self.read, self.library = reader if reader else (None, None)
        self.before: Optional[int] = None
        self.lowest: Optional[int] = None

    def start(self) -> None:
        if self.read is not None:
            self.before = self.lowest = self.read()

    def mark(self) -> None:
        if self.read is not None and self.before is not None:
            self.lowest = min(self.lowest, self.read())

    @property
    def held_mb(self) -> Optional[float]:
        if self.before is None:
            return None
        return round((self.before - self.lowest) / 2**20, 2)
