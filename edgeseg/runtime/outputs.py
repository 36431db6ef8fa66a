"""A model's output -> class map, whichever of the two forms the model gives.

A model exported plainly outputs NxCxHxW float logits and the host takes the argmax
(in the C core). A model exported with ``--argmax`` carries the argmax in its graph
and outputs the NxHxW class map itself (uint8 or int32, see
``edgeseg.exporting.argmax``). bench, eval, report, predict and the Segmenter all go
through ``to_class_map`` so they handle both without asking which one they hold: the
rank of the output says it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from edgeseg.runtime import native

LOGITS, CLASS_MAP = "logits", "class_map"
# 255 is the usual ignore value of label PNGs, so a class map is uint8 only while no class needs it
UINT8_MAX_CLASSES = 255


def class_map_dtype(num_classes: int):
    """uint8 up to 255 classes, uint16 beyond: the dtype predict and the Segmenter hand out."""
    return np.uint8 if num_classes <= UINT8_MAX_CLASSES else np.uint16


def output_kind(output: np.ndarray) -> str:
    """``"logits"`` for an NxCxHxW output, ``"class_map"`` for an NxHxW one (or an integer Nx1xHxW one: an
    ArgMax with keepdims=1, as other exporters write it)."""
    if output.ndim == 4 and output.shape[1] == 1 and np.issubdtype(output.dtype, np.integer):
        return CLASS_MAP
    if output.ndim == 4:
        return LOGITS
    if output.ndim == 3:
        return CLASS_MAP
    raise ValueError(f"a segmentation model outputs NxCxHxW logits or an NxHxW class map, not shape {output.shape}")


def to_class_map(output: np.ndarray, num_classes: Optional[int] = None) -> np.ndarray:
    """NxHxW class indices from either output form, as uint8 (uint16 past 255 classes).

    Logits go through the C core's argmax. A class map is passed through when it is
    already uint8 (no copy: the hot path of a class-map model), else narrowed: ONNX's
    int64, TensorRT 8.5's int32, or a float copy of either.
    """
    if output_kind(output) == LOGITS:
        classes = output.shape[1] if num_classes is None else num_classes
        indices = native.argmax(output)
        return indices if indices.dtype == class_map_dtype(classes) else indices.astype(class_map_dtype(classes))
    if output.ndim == 4:  # Nx1xHxW
        output = output[:, 0]
    if output.dtype == np.uint8 and (num_classes is None or num_classes <= UINT8_MAX_CLASSES):
        return output
    if num_classes is None:
        num_classes = int(output.max()) + 1 if output.size else 1
    return output.astype(class_map_dtype(num_classes))
