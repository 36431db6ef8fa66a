"""Streaming histograms of activations and the thresholds chosen from them.

Memory stays flat however many images are seen: each tensor keeps a fixed number of
bins over [0, range) of |x|. When a value beyond the range arrives, the range doubles
(as often as needed) and neighbouring bins merge, which loses no count and keeps every
earlier sample in a bin no wider than the new bins.
"""
from __future__ import annotations

import math

import numpy as np

NUM_BINS = 2048
INT8_LEVELS = 128  # quantisation bins of the positive half of symmetric INT8 (TensorRT's convention)


class StreamingHistogram:
    """|x| histogram plus exact signed min and max of one tensor."""

    def __init__(self, num_bins: int = NUM_BINS):
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.range = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        if values.size == 0:
            return
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        magnitude = np.abs(values)
        peak = float(magnitude.max())
        if self.range == 0.0:
            if peak == 0.0:
                self.counts[0] += values.size
                return
            self.range = peak
        elif peak > self.range:
            self._grow(peak)
        index = np.minimum((magnitude * (self.num_bins / self.range)).astype(np.int64), self.num_bins - 1)
        self.counts += np.bincount(index, minlength=self.num_bins)

    def _grow(self, peak: float) -> None:
        doublings = math.ceil(math.log2(peak / self.range))
        factor = 2 ** doublings
        if factor >= self.num_bins:
            merged = np.zeros(self.num_bins, dtype=np.int64)
            merged[0] = self.counts.sum()
        else:
            merged = np.zeros(self.num_bins, dtype=np.int64)
            merged[: self.num_bins // factor] = self.counts.reshape(-1, factor).sum(1)
        self.counts = merged
        self.range *= factor

    @property
    def bin_width(self) -> float:
        return self.range / self.num_bins

    def amax(self, method: str, percentile: float = 99.99) -> float:
        """The clipping threshold |x| <= amax that ``method`` chooses."""
        if self.range == 0.0:
            return 0.0
        if method == "minmax":
            return max(abs(self.min), abs(self.max))
        if method == "percentile":
            return percentile_amax(self.counts, self.bin_width, percentile)
        if method == "entropy":
            return entropy_amax(self.counts, self.bin_width)
        if method == "mse":
            return mse_amax(self.counts, self.bin_width)
        raise ValueError(f"unknown calibration method {method!r}")


def percentile_amax(counts: np.ndarray, bin_width: float, percentile: float) -> float:
    """Smallest threshold below which ``percentile`` % of the |x| samples fall."""
    cdf = np.cumsum(counts)
    index = int(np.searchsorted(cdf, cdf[-1] * percentile / 100.0))
    return (min(index, len(counts) - 1) + 1) * bin_width


def entropy_amax(counts: np.ndarray, bin_width: float, levels: int = INT8_LEVELS) -> float:
    """TensorRT's EntropyCalibration2 search: the threshold whose INT8 version loses least information.

    For each candidate i (in bins), P is the histogram clipped at i with the clipped mass
    added to the last bin; Q is P's first i bins merged into ``levels`` bins and spread
    back evenly over the bins that were non-zero. The threshold minimising KL(P || Q)
    wins (Migacz, "8-bit Inference with TensorRT", GTC 2017).

    As in NVIDIA's reference implementation, the first bin's count is replaced by the
    second's: after ReLU-like activations it holds a flood of exact zeros that would
    otherwise dominate the KL and pull the threshold far too low.
    """
    counts = counts.astype(np.float64)
    if len(counts) > 1:
        counts[0] = counts[1]
    nonzero = np.nonzero(counts)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else 0
    # A threshold must leave ``levels`` bins of data below it. Otherwise a tensor with no mass
    # near zero (a sigmoid gate living in [0.24, 0.93]) is "best" clipped to its lowest value:
    # the clipped spike is then the only non-zero bin of its INT8 level, Q reproduces P
    # exactly and KL is 0 (tests/test_quant.py: test_entropy_does_not_clip_a_gate_with_no_mass_near_zero).
    first = (int(nonzero[0]) if nonzero.size else 0) + levels
    if last <= first:
        return last * bin_width if last else bin_width
    # coarse pass over every step-th candidate, then every candidate around the best one
    step = max(1, (last - first) // 256)
    best_kl, best_i = _best_candidate(counts, range(first, last + 1, step), levels)
    if step > 1:
        fine = range(max(first, best_i - step), min(last, best_i + step) + 1)
        best_kl, best_i = _best_candidate(counts, fine, levels)
    return (best_i + 0.5) * bin_width


def _kl_of_candidate(counts: np.ndarray, i: int, levels: int) -> float:
    reference = counts[:i].copy()
    reference[i - 1] += counts[i:].sum()
    candidate = counts[:i]
    edges = np.linspace(0, i, levels + 1).astype(np.int64)
    chunk = np.searchsorted(edges, np.arange(i), side="right") - 1
    used = candidate > 0
    sums = np.bincount(chunk, weights=candidate, minlength=levels)
    filled = np.bincount(chunk, weights=used, minlength=levels)
    expanded = np.where(used, sums[chunk] / np.maximum(filled[chunk], 1), 0.0)
    q_total = expanded.sum()
    if q_total == 0:
        return math.inf
    p = reference / reference.sum()
    q = expanded / q_total
    mask = p > 0
    # q can be 0 where p > 0 only in the clipped last bin: smooth it rather than return infinity
    q = np.where(mask & (q == 0), 1e-10, q)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _best_candidate(counts: np.ndarray, candidates, levels: int):
    best_kl, best_i = math.inf, None
    for i in candidates:
        kl = _kl_of_candidate(counts, i, levels)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_kl, best_i if best_i is not None else candidates[-1]


def mse_amax(counts: np.ndarray, bin_width: float, levels: int = INT8_LEVELS, candidates: int = 256) -> float:
    """The threshold minimising the expected squared error of symmetric INT8 quantisation over the histogram."""
    centers = (np.arange(len(counts)) + 0.5) * bin_width
    weights = counts.astype(np.float64)
    nonzero = np.nonzero(counts)[0]
    top = (nonzero[-1] + 1) * bin_width if nonzero.size else bin_width
    best_err, best_t = math.inf, top
    for t in np.linspace(top / candidates, top, candidates):
        step = t / (levels - 1)
        quantised = np.clip(np.round(centers / step), 0, levels - 1) * step
        err = float(np.sum(weights * (centers - quantised) ** 2))
        if err < best_err:
            best_err, best_t = err, t
    return float(best_t)
