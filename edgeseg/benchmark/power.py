"""Board power on Jetson from ``tegrastats``: average watts and energy per frame.

Rails print as ``NAME current/average`` in mW (``mW`` units on JetPack 5/6, bare numbers
on older boards). The board total is ``VDD_IN`` (Xavier) or ``POM_5V_IN`` (Nano/TX);
AGX Orin has no input rail and its total is the sum of its rails.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from edgeseg.errors import MissingDependencyError

_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_GPU = re.compile(r"GR3D_FREQ (\d+)%")
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass
class PowerSample:
    rails_mw: Dict[str, int]
    total_mw: int
    gpu_util: Optional[int]


def parse_tegrastats_line(line: str) -> Optional[PowerSample]:
    """One tegrastats line -> its current power per rail and in total; None when it holds no rail."""
    rails = {name: int(current) for name, current, _average in _RAIL.findall(line)}
    if not rails:
        return None
    total = next((rails[name] for name in TOTAL_RAILS if name in rails), sum(rails.values()))
    gpu = _GPU.search(line)
    return PowerSample(rails, total, int(gpu.group(1)) if gpu else None)


@dataclass
class PowerSummary:
    samples: int
    average_w: float
    energy_per_frame_mj: Optional[float] = None
    rails_average_w: Dict[str, float] = field(default_factory=dict)


def summarize_power(samples: List[PowerSample], frames: int = 0, seconds: float = 0.0) -> PowerSummary:
    """Average power over the samples; energy per frame = average power x time / frames."""
    if not samples:
        return PowerSummary(0, float("nan"))
    average_w = sum(s.total_mw for s in samples) / len(samples) / 1e3
    rails = {name: round(sum(s.rails_mw.get(name, 0) for s in samples) / len(samples) / 1e3, 3)
             for name in samples[0].rails_mw}
    energy = round(average_w * seconds / frames * 1e3, 3) if frames and seconds else None
    return PowerSummary(len(samples), round(average_w, 3), energy, rails)


class TegrastatsSampler:
    """Runs ``tegrastats --interval N`` while the ``with`` block runs and keeps the parsed samples."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats"):
        self.interval_ms, self.command = interval_ms, command
        self.samples: List[PowerSample] = []

    def __enter__(self) -> "TegrastatsSampler":
        if shutil.which(self.command) is None:
            raise MissingDependencyError("--power needs tegrastats, which exists only on Jetson boards; "
                                         "run without --power elsewhere.")
        self.process = subprocess.Popen([self.command, "--interval", str(self.interval_ms)],
                                        stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            sample = parse_tegrastats_line(line)
            if sample is not None:
                self.samples.append(sample)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=5)
        self.reader.join(timeout=5)
