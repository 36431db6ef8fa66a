"""Image -> model input, in numpy: the one definition used at training, export, calibration and inference.

Using the same resize and normalisation everywhere is what keeps INT8 calibration and
accuracy numbers honest: a model calibrated on differently pre-processed images
sees other activation ranges at deployment.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from edgeseg.runtime import native
from edgeseg.spec import InputSpec


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image (no-op when the size already matches)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a class map: never invents classes at borders."""
    if label.shape[:2] == (height, width):
        return label
    return np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))


def normalize(image: np.ndarray, spec: InputSpec, dtype=np.float32) -> np.ndarray:
    """HxWx3 uint8 RGB (already at model size) -> 1x3xHxW ``dtype``, (x - mean) / std, fused in the C core."""
    return native.normalize(image, spec.mean, spec.std, dtype=dtype, swap_rb=spec.color.upper() == "BGR")


def preprocess(image: np.ndarray, spec: InputSpec, dtype=np.float32) -> np.ndarray:
    """Resize an RGB uint8 image to the model size and normalise it into a 1x3xHxW batch."""
    return normalize(resize_image(image, spec.height, spec.width), spec, dtype)
