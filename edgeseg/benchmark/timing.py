"""Latency statistics: warm-up, then timed runs, summarised as mean and percentiles."""
from __future__ import annotations

import time
from typing import Dict, List, Tuple

import numpy as np

from edgeseg.runtime.base import Runner


def latency_stats(samples_ms: List[float]) -> Dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    return {"mean": round(float(values.mean()), 4), "p50": round(float(np.percentile(values, 50)), 4),
            "p90": round(float(np.percentile(values, 90)), 4), "p99": round(float(np.percentile(values, 99)), 4),
            "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}


def time_inference(runner: Runner, batch: np.ndarray, warmup: int = 10, iters: int = 50,
                   warmup_ms: float = 0.0, duration_s: float = 0.0) -> Tuple[List[float], List[float]]:
    """(host, compute) latency per call in ms.

    Warm-up runs ``warmup`` calls and at least ``warmup_ms``; then ``iters`` calls, or
    as many as fit in ``duration_s`` seconds when that is given (like trtexec's
    --warmUp/--iterations/--duration).
    """
    started = time.perf_counter()
    done = 0
    while done < warmup or (time.perf_counter() - started) * 1e3 < warmup_ms:
        runner.infer(batch)
        done += 1
    host, compute = [], []
    started = time.perf_counter()
    while (len(host) < iters) if not duration_s else (time.perf_counter() - started < duration_s or not host):
        runner.infer(batch)
        host.append(runner.last_inference_ms)
        compute.append(runner.last_compute_ms)
    return host, compute
