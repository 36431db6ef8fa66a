"""The report's figures: per-class IoU by stage, and predicted masks beside the ground truth."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgeseg.fileio import atomic_path

IGNORED_COLOUR = (0, 0, 0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # render to a file on machines without a display
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def default_palette(num_classes: int) -> List[tuple]:
    """Distinct colours for datasets that define none (golden-angle hues, fixed lightness)."""
    import colorsys

    return [tuple(int(255 * c) for c in colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.5, 0.75))
            for i in range(num_classes)]


def colourise(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """HxW class indices -> HxWx3 uint8 RGB; indices outside the palette (the ignore label) are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:] = IGNORED_COLOUR
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]
    return table[np.clip(mask, 0, 255).astype(np.uint8)]


def per_class_iou_png(path: str | Path, rows: List[dict], *, title: str) -> Path:
    """Grouped horizontal bars: one group per class, one bar per stage."""
    plt = _pyplot()
    classes = list((rows[0].get("per_class_iou") or {}).keys())
    height = 0.8 / max(len(rows), 1)
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(classes) * max(1.0, len(rows) / 3) + 1.5), dpi=110)
    positions = np.arange(len(classes))
    for index, row in enumerate(rows):
        values = [row["per_class_iou"].get(c) for c in classes]
        axes.barh(positions + index * height, [0 if v is None else v for v in values], height=height,
                  label=row["stage"])
    axes.set_yticks(positions + height * (len(rows) - 1) / 2)
    axes.set_yticklabels(classes)
    axes.invert_yaxis()
    axes.set_xlabel("IoU (%)")
    axes.set_xlim(0, 100)
    axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return _save(figure, Path(path))


def mask_grid_png(path: str | Path, masks: dict, *, palette: Sequence[Sequence[int]],
                  class_names: Optional[List[str]] = None, title: str = "") -> Path:
    """One row per image: the image, the ground truth, then each stage's prediction, in the dataset's colours."""
    plt = _pyplot()
    predictions: Dict[str, List[np.ndarray]] = masks["predictions"]
    columns = ["image", "ground truth"] + list(predictions)
    count = len(masks["images"])
    figure, axes = plt.subplots(count, len(columns), figsize=(2.6 * len(columns), 2.1 * count + 0.9), dpi=110,
                                squeeze=False)
    for row_index in range(count):
        panels = [masks["images"][row_index], colourise(masks["labels"][row_index], palette)]
        panels += [colourise(predictions[name][row_index], palette) for name in predictions]
        for column_index, panel in enumerate(panels):
            axis = axes[row_index][column_index]
            axis.imshow(panel)
            axis.set_xticks([])
            axis.set_yticks([])
            if row_index == 0:
                axis.set_title(columns[column_index], fontsize=8)
    if class_names:
        from matplotlib.patches import Patch

        handles = [Patch(color=np.asarray(palette[i]) / 255, label=name) for i, name in enumerate(class_names)
                   if i < len(palette)]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.06 if class_names else 0, 1, 1))
    return _save(figure, Path(path))
