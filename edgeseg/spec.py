"""What a model expects and what a dataset holds: the two facts every stage passes on.

Both travel in each artifact's sidecar so later stages never ask the user again.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
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


def stats_in_255_units(values) -> Tuple[float, float, float]:
    """Mean or std given in 0-1 units (every value <= 1, torchvision's convention) or 0-255 units -> 0-255 units."""
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        from edgeseg.errors import ConfigError

        raise ConfigError(f"Mean and std need three values (R,G,B), got {len(values)}: {list(values)}.")
    return tuple(v * 255.0 for v in values) if max(values) <= 1.0 else values


@dataclass(frozen=True)
class ModelFacts:
    """What edgeseg cannot read from a model file it did not make, given once by the user.

    The CLI builds one from the shared options (``--arch``, ``--num-classes``,
    ``--input-size``, ``--mean``, ``--std`` and ``--data``'s dataset.yaml) and every verb
    that takes a model accepts it. A fact the file (or its sidecar) already records wins:
    these only fill what is unknown, and the first artifact edgeseg writes records them,
    so later verbs never ask again. Mean and std are in 0-255 units (see
    ``stats_in_255_units``); ``None`` means ImageNet's, the stated default.

    >>> ModelFacts(arch="lraspp-mobilenetv3-large", num_classes=11, input_size=(360, 480))
    ... # doctest: +ELLIPSIS
    ModelFacts(...)
    """

    arch: Optional[str] = None
    num_classes: Optional[int] = None
    input_size: Optional[Tuple[int, int]] = None
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    dataset: Optional[DatasetInfo] = None  # class names and palette from --data's dataset.yaml
    dla_core: Optional[int] = None  # the DLA core an engine built elsewhere was built for (trtexec --useDLACore)

    def __post_init__(self):
        # the Python API takes mean/std in either unit, as the CLI does (torchvision's 0-1 or 0-255)
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, stats_in_255_units(getattr(self, name)))

    def input_spec(self, height: Optional[int] = None, width: Optional[int] = None) -> Optional[InputSpec]:
        """The input spec these facts describe; ``height``/``width`` (e.g. an ONNX graph's static size) win."""
        if height is None or width is None:
            if self.input_size is None:
                return None
            height, width = self.input_size
        return InputSpec(height=int(height), width=int(width), mean=self.mean or IMAGENET_MEAN,
                         std=self.std or IMAGENET_STD)

    def dataset_info(self, num_classes: int) -> DatasetInfo:
        """Class layout for a model of ``num_classes``: the data's, when it has as many classes."""
        if self.dataset is not None and self.dataset.num_classes == num_classes:
            return self.dataset
        return DatasetInfo(num_classes=int(num_classes))

    def to_dict(self) -> dict:
        """What the user gave, as a sidecar records it."""
        given = {"arch": self.arch, "num_classes": self.num_classes,
                 "input_size": list(self.input_size) if self.input_size else None,
                 "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None,
                 "dla_core": self.dla_core}
        return {k: v for k, v in given.items() if v is not None}
