"""What a model expects and what a dataset holds: the two facts every stage passes on.

Both travel in each artifact's sidecar so later stages never ask the user again.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

# ImageNet statistics in 0-255 units: the convention of torchvision backbones.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes a model input: resize to (height, width), then (x - mean) / std per channel."""

    height: int
    width: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    color: str = "RGB"

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "mean": list(self.mean),
                "std": list(self.std), "color": self.color}

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        return cls(height=int(data["height"]), width=int(data["width"]),
                   mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                   color=str(data.get("color", "RGB")))


@dataclass(frozen=True)
class DatasetInfo:
    """Class layout of a dataset: what the label values mean."""

    num_classes: int
    ignore_index: int = 255
    classes: Tuple[str, ...] = ()
    palette: Tuple[Tuple[int, int, int], ...] = ()
    name: str = "dataset"

    def class_names(self) -> List[str]:
        if len(self.classes) == self.num_classes:
            return list(self.classes)
        return [f"class{i}" for i in range(self.num_classes)]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["classes"] = self.class_names()
        data["palette"] = [list(c) for c in self.palette]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetInfo":
        return cls(num_classes=int(data["num_classes"]), ignore_index=int(data.get("ignore_index", 255)),
                   classes=tuple(data.get("classes") or ()),
                   palette=tuple(tuple(int(v) for v in c) for c in (data.get("palette") or ())),
                   name=str(data.get("name", "dataset")))


@dataclass(frozen=True)
class ModelFacts:
    """Size facts of a network, carried from the checkpoint to every artifact derived from it."""

    arch: str
    num_classes: int
    params: int
    macs: int
    extra: Optional[dict] = field(default=None)
