"""Confusion matrix and IoU, in numpy so the deploy side needs no torch.

mIoU is computed from one confusion matrix accumulated over the whole split (the
standard definition), not as a mean of per-image IoUs, which over-weights small images
and classes absent from an image.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows are ground truth, columns predictions.

    Labels outside the classes (and ``ignore_index``) are skipped; a *prediction* outside
    them raises ValueError: a model or post-processing that emits one has a bug, and
    counting it as some class would hide it in the mIoU.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
    label = label.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    check_predictions(pred, num_classes)
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + pred[keep]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def out_of_range_message(value: int, num_classes: int) -> str:
    """The one sentence both the numpy and the C confusion matrix raise for a prediction outside the classes."""
    return (f"prediction {value} is outside the {num_classes} classes (0-{num_classes - 1}): an out-of-range "
            f"prediction is a bug in the model's output or its post-processing, not a pixel to count")


def check_predictions(pred: np.ndarray, num_classes: int) -> None:
    """ValueError when any predicted class index lies outside [0, num_classes); the first such pixel is named."""
    bad = (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise ValueError(out_of_range_message(int(pred.reshape(-1)[np.argmax(bad.reshape(-1))]), num_classes))


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class in percent; NaN for a class absent from both labels and predictions."""
    confusion = confusion.astype(np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, 100.0 * tp / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    ious = iou_per_class(confusion)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(100.0 * np.trace(confusion) / total) if total else float("nan")


def summarize(confusion: np.ndarray, class_names: Optional[List[str]] = None) -> Dict[str, object]:
    """mIoU, pixel accuracy and per-class IoU (None where the class never occurs)."""
    ious = iou_per_class(confusion)
    names = class_names or [f"class{i}" for i in range(len(ious))]
    return {
        "miou": round(mean_iou(confusion), 4),
        "pixel_accuracy": round(pixel_accuracy(confusion), 4),
        "per_class_iou": {n: (None if np.isnan(v) else round(float(v), 4)) for n, v in zip(names, ious)},
    }


def paired_miou_interval(frames_a: np.ndarray, frames_b: np.ndarray, *, block: int = 1, rounds: int = 2000,
                         level: float = 0.95, seed: int = 0) -> Dict[str, float]:
    """How far apart two models' mIoU on the same frames really are: B minus A, with a paired bootstrap interval.

    ``frames_a`` and ``frames_b`` are per-frame confusion matrices, (frames, classes, classes), of two models on
    the same frames in the same order. Each round draws the frames again with replacement (the same draw for
    both models: the pairing removes what the frames' own difficulty adds) and computes both mIoUs from the
    drawn frames' summed confusion, as mIoU itself is computed; the interval is the difference's ``level``
    percentile range over the rounds. Neighbouring frames of a drive are near-duplicates, so ``block`` > 1
    draws runs of that many consecutive frames (a circular block bootstrap): with single frames the interval
    would be narrower than what a drive tells apart. An interval that holds 0 means these frames cannot tell
    the two models apart.
    """
    if frames_a.shape != frames_b.shape or frames_a.ndim != 3:
        raise ValueError(f"per-frame confusions of the same frames are needed, got {frames_a.shape} and "
                         f"{frames_b.shape}")
    count = len(frames_a)
    block = max(1, min(block, count))
    starts = np.random.default_rng(seed).integers(0, count, size=(rounds, -(-count // block)))
    drawn = ((starts[:, :, None] + np.arange(block)) % count).reshape(rounds, -1)[:, :count]
    weights = np.zeros((rounds, count))
    np.add.at(weights, (np.arange(rounds)[:, None], drawn), 1.0)
    classes = frames_a.shape[1]
    differences = np.empty(rounds)
    for i, (a, b) in enumerate(zip(weights @ frames_a.reshape(count, -1), weights @ frames_b.reshape(count, -1))):
        differences[i] = mean_iou(b.reshape(classes, classes)) - mean_iou(a.reshape(classes, classes))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    return {"difference": round(mean_iou(frames_b.sum(0)) - mean_iou(frames_a.sum(0)), 4),
            "low": round(float(low), 4), "high": round(float(high), 4), "level": level, "block": block,
            "rounds": rounds}
