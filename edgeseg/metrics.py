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
