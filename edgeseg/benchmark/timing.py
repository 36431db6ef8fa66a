"""Latency statistics: warm-up, then timed runs, summarised as mean and percentiles."""
from __future__ import annotations

import time
from typing import Dict, List

import numpy as np

from edgeseg.runtime.base import Runner


def latency_stats(samples_ms: List[float]) -> Dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    return {"mean": round(float(values.mean()), 4), "p50": round(float(np.percentile(values, 50)), 4),
            "p90": round(float(np.percentile(values, 90)), 4), "p99": round(float(np.percentile(values, 99)), 4),
            "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}


def time_inference(runner: Runner, batch: np.ndarray, warmup: int = 10, iters: int = 50,
                   warmup_ms: float = 0.0) -> List[float]:
    """Per-call inference latency in ms after ``warmup`` calls (and at least ``warmup_ms`` of warm-up)."""
    started = time.perf_counter()
    done = 0
    while done < warmup or (time.perf_counter() - started) * 1e3 < warmup_ms:
        runner.infer(batch)
        done += 1
    samples = []
    for _ in range(iters):
        runner.infer(batch)
        samples.append(runner.last_inference_ms)
    return samples
