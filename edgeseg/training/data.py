"""Turning ``--data`` into train and validation sets for the training-side verbs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from edgeseg.data.dataset import (DEFAULT_IGNORE_INDEX, ClassCount, SegmentationSplit, check_class_count,
                                  resolve_split)
from edgeseg.errors import ConfigError
from edgeseg.spec import InputSpec


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


def training_splits(data: str | Path, *, classes: Optional[ClassCount] = None,
                    ignore_index: int = DEFAULT_IGNORE_INDEX) -> Tuple[SegmentationSplit, Optional[SegmentationSplit]]:
    """The train split and, when the dataset root has one, the val split (never the train folder again).

    ``classes`` (a model's count, or ``--num-classes``) and ``ignore_index`` apply where no
    dataset.yaml says them; the val split must have the train split's classes.
    """
    train = resolve_split(data, "train", classes=classes, ignore_index=ignore_index)
    if str(data).lower() != "synthetic":
        root = Path(data)
        from edgeseg.data.layouts import has_split

        if not ((root / "val" / "images").is_dir() or (root / "leftImg8bit" / "val").is_dir()
                or has_split(root, "val")):
            return train, None
    val = resolve_split(data, "val", classes=classes or train.classes, ignore_index=ignore_index)
    if val.info.ignore_index != train.info.ignore_index:
        raise ConfigError(f"The train split of {data} ignores label {train.info.ignore_index} but its val split "
                          f"{val.info.ignore_index}; make their dataset.yaml files agree.")
    return train, val


def default_input_spec(split: SegmentationSplit, input_size: Optional[str]) -> InputSpec:
    if input_size:
        height, width = parse_size(input_size)
    else:
        height, width = split.image(0).shape[:2]
    return InputSpec(height=int(height), width=int(width))


def check_classes(model: ClassCount, split: SegmentationSplit) -> None:
    """Refuse a model whose class count is not the data's, naming what said each."""
    check_class_count(model, split)


def dataset_reference(data: str | Path) -> str:
    """How a sidecar names the data: 'synthetic', or an absolute path later stages can find again."""
    return "synthetic" if str(data).lower() == "synthetic" else str(Path(data).resolve())
