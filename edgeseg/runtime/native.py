"""Host-side kernels: the C core where it was built, its numpy twin everywhere else.

Both give bit-identical results (tests/test_native.py checks it), so accuracy numbers
never depend on whether the extension compiled. ``BACKEND`` says which one is in use.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

try:
    from edgeseg.runtime import _native
except ImportError:  # not compiled here (no compiler, or a source checkout): use numpy
    _native = None

BACKEND = "c" if _native is not None else "numpy"


def _scale_shift(mean: Sequence[float], std: Sequence[float]):
    scale = 1.0 / np.asarray(std, dtype=np.float32)
    shift = -np.asarray(mean, dtype=np.float32) * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def normalize_numpy(image: np.ndarray, mean, std, out: np.ndarray, swap_rb: bool = False) -> np.ndarray:
    scale, shift = _scale_shift(mean, std)
    if swap_rb:
        image = image[..., ::-1]
    chw = image.transpose(2, 0, 1).astype(np.float32)
    with np.errstate(over="ignore"):  # float16 overflow becomes inf, as in C
        out.reshape(chw.shape)[...] = (chw * scale[:, None, None] + shift[:, None, None]).astype(out.dtype)
    return out


def normalize(image: np.ndarray, mean, std, out: Optional[np.ndarray] = None, dtype=np.float32,
              swap_rb: bool = False) -> np.ndarray:
    """uint8 HxWx3 -> (x - mean) / std as a 1x3xHxW ``dtype`` array (written into ``out`` when given)."""
    if out is None:
        out = np.empty((1, 3) + image.shape[:2], dtype=dtype)
    if _native is None:
        return normalize_numpy(image, mean, std, out, swap_rb)
    scale, shift = _scale_shift(mean, std)
    _native.normalize(np.ascontiguousarray(image), tuple(scale.tolist()), tuple(shift.tolist()), out, swap_rb)
    return out


def argmax_numpy(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
    out[...] = logits.argmax(1)
    return out


def argmax(logits: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """NxCxHxW float32 logits -> NxHxW class indices (uint8 up to 256 classes, int32 beyond)."""
    if out is None:
        dtype = np.uint8 if logits.shape[1] <= 256 else np.int32
        out = np.empty((logits.shape[0],) + logits.shape[2:], dtype=dtype)
    if _native is None or logits.dtype != np.float32:
        return argmax_numpy(logits, out)
    _native.argmax(np.ascontiguousarray(logits), out)
    return out


def confusion_numpy(matrix: np.ndarray, pred: np.ndarray, label: np.ndarray, ignore_index: int) -> np.ndarray:
    from edgeseg.metrics import confusion_matrix

    matrix += confusion_matrix(pred.reshape(-1), label.reshape(-1), matrix.shape[0], ignore_index)
    return matrix


def accumulate_confusion(matrix: np.ndarray, pred: np.ndarray, label: np.ndarray, ignore_index: int) -> np.ndarray:
    """Add the (label, pred) pixel counts to the int64 CxC ``matrix`` in place; ignored labels are skipped."""
    if pred.size != label.size:
        raise ValueError(f"prediction has {pred.size} pixels, label has {label.size}")
    if _native is None:
        return confusion_numpy(matrix, pred, label, ignore_index)
    _native.confusion(np.ascontiguousarray(pred), np.ascontiguousarray(label), matrix, int(ignore_index))
    return matrix
