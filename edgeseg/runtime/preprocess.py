"""Image -> model input, in numpy: the one definition used at training, export, calibration and inference.

Using the same resize and normalisation everywhere is what keeps INT8 calibration and
accuracy numbers honest: a model calibrated on differently pre-processed images
sees other activation ranges at deployment.
"""
from __future__ import annotations

import numpy as np

from edgeseg.data.resize import resize_image, resize_label  # noqa: F401  (the runtime's callers import them here)
from edgeseg.runtime import native
from edgeseg.spec import InputSpec


def normalize(image: np.ndarray, spec: InputSpec, dtype=np.float32) -> np.ndarray:
    """HxWx3 uint8 RGB (already at model size) -> 1x3xHxW ``dtype``, (x - mean) / std, fused in the C core."""
    return native.normalize(image, spec.mean, spec.std, dtype=dtype, swap_rb=spec.color.upper() == "BGR")


def preprocess(image: np.ndarray, spec: InputSpec, dtype=np.float32) -> np.ndarray:
    """Resize an RGB uint8 image to the model size and normalise it into a 1x3xHxW batch."""
    return normalize(resize_image(image, spec.height, spec.width), spec, dtype)
