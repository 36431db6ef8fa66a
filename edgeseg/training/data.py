"""Turning ``--data`` into train and validation sets for the training-side verbs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from edgeseg.data.dataset import SegmentationSplit, resolve_split
from edgeseg.errors import ConfigError, DataError
from edgeseg.spec import DatasetInfo, InputSpec


def parse_size(text: str) -> Tuple[int, int]:
    """'180x240' -> (180, 240); one number means a square."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise ConfigError(f"Input size '{text}' is not HEIGHTxWIDTH with both at least 8 (for example 180x240).")
    return parts[0], parts[1]


def training_splits(data: str | Path) -> Tuple[SegmentationSplit, Optional[SegmentationSplit]]:
    """The train split and, when the dataset root has one, the val split (never the train folder again)."""
    train = resolve_split(data, "train")
    if str(data).lower() == "synthetic":
        return train, resolve_split(data, "val")
    root = Path(data)
    from edgeseg.data.layouts import has_split

    has_val = (root / "val" / "images").is_dir() or (root / "leftImg8bit" / "val").is_dir() or has_split(root, "val")
    return train, (resolve_split(data, "val") if has_val else None)


def default_input_spec(split: SegmentationSplit, input_size: Optional[str]) -> InputSpec:
    if input_size:
        height, width = parse_size(input_size)
    else:
        height, width = split.image(0).shape[:2]
    return InputSpec(height=int(height), width=int(width))


def check_classes(model_classes: int, info: DatasetInfo, what: str) -> None:
    if model_classes != info.num_classes:
        raise DataError(f"{what} predicts {model_classes} classes but the data has {info.num_classes}; "
                        f"use a model trained for this dataset or fix num_classes in dataset.yaml.")


def dataset_reference(data: str | Path) -> str:
    """How a sidecar names the data: 'synthetic', or an absolute path later stages can find again."""
    return "synthetic" if str(data).lower() == "synthetic" else str(Path(data).resolve())
