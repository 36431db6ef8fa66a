"""Measure every stage of a run the same way: accuracy over the whole split, latency interleaved.

Latency is timed in rounds that visit every stage in turn, so a noisy machine slows all
stages alike and the speed-ups between them stay honest; the statistics are over all
rounds' calls, and each stage also keeps its median per round, from which the report
takes paired speed-ups (benchmark/report.py).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edgeseg.benchmark.api import accuracy_pass, artifact_row, check_classes, timing_row
from edgeseg.benchmark.timing import time_inference
from edgeseg.console import progress_bar
from edgeseg.data.dataset import SegmentationSplit
from edgeseg.runtime.outputs import to_class_map
from edgeseg.runtime.loader import describe, open_runner
from edgeseg.runtime.preprocess import preprocess, resize_label


def measure_stages(artifacts: Dict[str, Path], split: SegmentationSplit, *, rounds: int = 10, iters_per_round: int = 10,
                   warmup: int = 10, mask_images: int = 4, device: str = "cpu", threads: Optional[int] = None,
                   trust_checkpoint: bool = False, trust_engine: bool = False,
                   allow_engine_host_code: bool = False) -> dict:
    """``{"rows": [...], "masks": {...}}``: one bench-like row per stage, and predictions for the mask grid.

    ``artifacts`` maps stage name -> artifact path, in pipeline order. Masks are predicted by
    the first and the last stage on ``mask_images`` images spread over the split.
    """
    names = list(artifacts)
    with contextlib.ExitStack() as stack:
        opened = {}
        for name in names:
            artifact = describe(artifacts[name], trust_checkpoint)
            check_classes(artifact, split)
            runner = stack.enter_context(open_runner(artifact, device, threads, trust_checkpoint, trust_engine,
                                                          allow_engine_host_code))
            opened[name] = (artifact, runner)
        rows = []
        for name in names:
            artifact, runner = opened[name]
            row = dict(stage=name, **artifact_row(artifact, runner, device))
            row["artifact"] = artifact.path.name
            row["num_images"] = len(split)
            row.update(accuracy_pass(runner, artifact, split, f"eval {name}"))
            row.pop("confusion", None)
            rows.append(row)
        latencies = _interleaved_latency(opened, split, rounds, iters_per_round, warmup)
        for row in rows:
            host, compute = latencies[row["stage"]]
            row.update(timing_row(host, compute))
            row["round_p50_ms"] = [round(float(np.median(host[i:i + iters_per_round])), 4)
                                   for i in range(0, len(host), iters_per_round)]
        masks = _predict_masks({n: opened[n] for n in (names[0], names[-1])}, split, mask_images)
    return {"rows": rows, "masks": masks, "timing": {"rounds": rounds, "iters_per_round": iters_per_round,
                                                     "warmup": warmup, "batch": 1, "device": device}}


def _interleaved_latency(opened: dict, split: SegmentationSplit, rounds: int, iters: int, warmup: int) -> dict:
    """stage -> (host ms, compute ms) over ``rounds`` rounds of ``iters`` calls, stages taking turns."""
    batches = {name: preprocess(split.image(0), artifact.input_spec) for name, (artifact, _) in opened.items()}
    samples = {name: ([], []) for name in opened}
    with progress_bar("latency, stages interleaved", rounds * len(opened)) as advance:
        for round_index in range(rounds):
            for name, (_, runner) in opened.items():
                host, compute = time_inference(runner, batches[name], warmup=warmup if round_index == 0 else 1,
                                               iters=iters)
                samples[name][0].extend(host)
                samples[name][1].extend(compute)
                advance(1)
    return samples


def _predict_masks(opened: dict, split: SegmentationSplit, count: int) -> dict:
    """Images, ground truth and each given stage's prediction (at label size) for ``count`` spread-out images."""
    count = min(count, len(split))
    if count <= 0:
        return {"images": [], "labels": [], "predictions": {}}
    indices = sorted({int(i) for i in np.linspace(0, len(split) - 1, count)})
    images, labels = [split.image(i) for i in indices], [split.label(i) for i in indices]
    predictions: Dict[str, List[np.ndarray]] = {}
    for name, (artifact, runner) in opened.items():
        predictions[name] = []
        for image, label in zip(images, labels):
            output = runner.infer(preprocess(image, artifact.input_spec))  # logits or a class map
            predictions[name].append(resize_label(to_class_map(output)[0], label.shape[0], label.shape[1]))
    return {"indices": indices, "images": images, "labels": labels, "predictions": predictions}
