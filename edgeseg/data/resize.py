"""Resizing images and class maps: bilinear for pixels, nearest for labels (never invents classes).

The base of the data flow, shared by training (data/torch_dataset.py) and inference
(runtime/preprocess.py); it lives here so the data side never reaches into the runtime.
Deploy side: no torch, Python 3.8.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


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
