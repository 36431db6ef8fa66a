"""Colours for class maps: the dataset's palette, and the mask blended over its image."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from edgeseg.spec import DatasetInfo


def default_palette(num_classes: int):
    """Distinct colours for datasets that define none (the report's golden-angle hues)."""
    from edgeseg.report.figures import default_palette as golden_angle

    return golden_angle(num_classes)


def palette_table(info: Optional[DatasetInfo], num_classes: int) -> np.ndarray:
    """Cx3 uint8 colours: the dataset's palette, completed with distinct colours where it is short."""
    palette = list(info.palette) if info is not None else []
    if len(palette) < num_classes:
        palette += default_palette(num_classes)[len(palette):]
    return np.asarray(palette[:max(num_classes, 1)], dtype=np.uint8).reshape(-1, 3)


def colorize(mask: np.ndarray, table: np.ndarray) -> np.ndarray:
    """HxW class indices -> HxWx3 RGB (indices past the palette are clipped to its last colour)."""
    return table[np.minimum(mask, len(table) - 1)]


def overlay(image: np.ndarray, mask: np.ndarray, table: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the mask's colours blended in: (1 - alpha) * image + alpha * colour, as uint8.

    Integer arithmetic on uint16 (weights out of 256) keeps this a few milliseconds a
    frame at 1080p instead of a float pass.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the mask is {mask.shape[1]}x{mask.shape[0]}")
    weight = int(round(min(max(alpha, 0.0), 1.0) * 256))
    colours = colorize(mask, table).astype(np.uint16)
    blended = image.astype(np.uint16) * (256 - weight) + colours * weight
    return (blended >> 8).astype(np.uint8)


def flat_palette(table: Sequence[Sequence[int]]) -> list:
    """A PNG palette (768 values) from up to 256 colours; unused entries black."""
    values = [int(v) for colour in list(table)[:256] for v in colour]
    return values + [0] * (768 - len(values))
