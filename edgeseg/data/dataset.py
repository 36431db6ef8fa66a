"""Segmentation datasets as lists of (image, label) file pairs, readable without torch.

``resolve_split("camvid/", "val")`` accepts:
- a split folder (``images/`` + ``labels/`` with matching stems),
- a dataset root whose ``train/`` and ``val/`` folders are splits,
- a Cityscapes root (``leftImg8bit/`` + ``gtFine/``, mapped to the 19 train ids),
- the name ``synthetic``: edgeseg's own generated street scenes.
A ``dataset.yaml`` (in the split or its parent; beside a Pascal VOC or MMSegmentation
folder) says what the labels mean: ``num_classes``, ``ignore_index``, ``classes``,
``palette``. Without one, the class count comes from the layout (VOC 21, ADE20K 150,
Cityscapes 19) or from outside the data (the model, ``--num-classes``: a ``ClassCount``),
never from the largest label value: a split whose ignore value is 11, or one that lacks
the top class, would read as a different count. Where nothing says it, resolving a
labelled split is refused in one sentence naming the label values found.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.data.images import list_images, read_colour_label, read_image, read_label
from edgeseg.errors import DataError, option
from edgeseg.spec import DatasetInfo

DEFAULT_IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassCount:
    """A class count and what said it, so a refusal can name both sides and how to change each.

    ``said_by`` completes "... says N classes" (``"model.onnx's sidecar"``, ``"--num-classes"``,
    ``"camvid/dataset.yaml"``); ``remedy`` is what the user can do about it.

    >>> ClassCount(11, "model.onnx's sidecar", "use a model trained for this data")  # doctest: +ELLIPSIS
    ClassCount(...)
    """

    num_classes: int
    said_by: str
    remedy: str = "use a model trained for this data"

    @classmethod
    def of_model(cls, path: str | Path, meta: dict, num_classes: int) -> "ClassCount":
        """A model file's count, named by where it was read: its sidecar, its checkpoint, its output, or
        --num-classes (``meta`` is the sidecar, or what edgeseg made of a file from elsewhere)."""
        from edgeseg.sidecar import sidecar_path

        name = Path(path).name
        source = meta.get("source") or {}
        if "num_classes" in (source.get("given") or {}):
            return cls(num_classes, f"--num-classes (for {name})", "change --num-classes")
        if source:  # made elsewhere: the count was read from the file itself
            return cls(num_classes, f"{name}'s output" if Path(path).suffix.lower() == ".onnx" else f"{name}'s weights")
        return cls(num_classes, f"{name}'s sidecar" if sidecar_path(path).is_file() else f"{name}'s checkpoint")


class ClassCountError(DataError):
    """Two sources disagree on the class count, or nothing says it."""


@dataclass
class SegmentationSplit:
    """One split of a dataset: paired image and label files plus what the labels mean.

    ``info`` is None only for a split resolved without labels (``require_labels=False``)
    whose class count nothing says; reading a label from it is refused.
    """

    pairs: List[Tuple[Path, Optional[Path]]]
    info: Optional[DatasetInfo]
    root: Path
    label_map: Optional[np.ndarray] = None  # lookup table raw label value -> class index
    label_colours: Optional[np.ndarray] = None  # Kx3 palette: labels are RGB colour-coded PNGs, colour k is class k
    classes: Optional[ClassCount] = None  # what decided info.num_classes
    ignore_index: int = DEFAULT_IGNORE_INDEX  # the value asked for where no dataset.yaml says it (for refusals)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def has_labels(self) -> bool:
        return all(label is not None for _, label in self.pairs)

    def image(self, index: int) -> np.ndarray:
        return read_image(self.pairs[index][0])

    def label(self, index: int) -> np.ndarray:
        path = self.pairs[index][1]
        if path is None:
            raise DataError(f"{self.pairs[index][0]} has no label; labelled data is needed here.")
        if self.info is None:
            raise undecided_classes(self.pairs, self.root, self.ignore_index)
        if self.label_colours is not None:
            label = read_colour_label(path, self.label_colours, self.info.ignore_index)
        else:
            label = read_label(path)
        if self.label_map is not None:
            label = self.label_map[label]
        self._check_label_values(label, path)
        return label

    def _check_label_values(self, label: np.ndarray, path: Path) -> None:
        info = self.info
        bad = (label >= info.num_classes) & (label != info.ignore_index)
        if bad.any():
            value = int(label[bad][0])
            said_by = self.classes.said_by if self.classes else "the data"
            raise DataError(
                f"Label {path} holds value {value}, outside classes 0..{info.num_classes - 1} ({said_by} says "
                f"{info.num_classes}) and not the ignore index {info.ignore_index}; fix the labels, or set "
                f"num_classes/ignore_index in dataset.yaml (or "
                f"{option('--num-classes/--ignore-index', 'num_classes=/ignore_index=')} where no dataset.yaml is).")

    def subset(self, indices: Sequence[int]) -> "SegmentationSplit":
        return SegmentationSplit([self.pairs[i] for i in indices], self.info, self.root, self.label_map,
                                 self.label_colours, self.classes, self.ignore_index)


def check_class_count(model: ClassCount, split: SegmentationSplit) -> None:
    """Refuse, naming both sources and how to change each, when ``model``'s count is not ``split``'s."""
    data = split.classes
    if data is None or split.info is None or model.num_classes == split.info.num_classes:
        return
    raise class_count_mismatch(model, data)


def class_count_mismatch(model: ClassCount, data: ClassCount) -> ClassCountError:
    return ClassCountError(f"{model.said_by} says {model.num_classes} classes but {data.said_by} says "
                           f"{data.num_classes}; {data.remedy}, or {model.remedy}.")


def label_values(pairs, limit: int = 50) -> List[int]:
    """The distinct raw values of the first ``limit`` labels (for refusals that name what the labels hold)."""
    found: set = set()
    for _, label in pairs[:limit]:
        if label is not None:
            found.update(int(v) for v in np.unique(read_label(label)))
    return sorted(found)


def _value_ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 3, 11, 255] -> '0-3, 11, 255'."""
    parts, start = [], None
    for i, value in enumerate(values):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts) or "none"


def undecided_classes(pairs, root: Path, ignore_index: int = DEFAULT_IGNORE_INDEX) -> ClassCountError:
    """The refusal where neither a dataset.yaml, a layout, a model nor --num-classes says the class count."""
    return ClassCountError(
        f"Nothing says how many classes {root} has (no dataset.yaml in it or its parent, no model or --num-classes, "
        f"and edgeseg does not guess from the largest label) and its labels hold the values "
        f"{_value_ranges(label_values(pairs))}; add a dataset.yaml with `num_classes:` (and `ignore_index:` for the "
        f"value that marks unlabelled pixels, {ignore_index} if none is given) or pass "
        f"{option('--num-classes N (and --ignore-index V)', 'num_classes=N (and ignore_index=V)')}.")


def load_dataset_yaml(path: Path, ignore_index: int = DEFAULT_IGNORE_INDEX) -> DatasetInfo:
    """What ``path`` (a dataset.yaml) says; ``ignore_index`` is used only where it does not say one.

    ``num_classes`` may be left out when ``classes`` lists every class.
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path} is not valid YAML ({exc}); fix it or delete it.") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a mapping of keys (num_classes:, ignore_index:, classes:); fix it.")
    classes = tuple(str(c) for c in (data.get("classes") or ()))
    if "num_classes" not in data and not classes:
        raise DataError(f"{path} does not say num_classes; add it (for example `num_classes: 11`).")
    try:
        num_classes = int(data.get("num_classes", len(classes)))
        ignore = int(data.get("ignore_index", ignore_index))
        palette = tuple(tuple(int(v) for v in c) for c in (data.get("palette") or ()))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path} has a num_classes, ignore_index or palette that is not numbers ({exc}); fix it.") \
            from None
    if num_classes < 1:
        raise DataError(f"{path} says num_classes {num_classes}; it must be at least 1.")
    if classes and len(classes) != num_classes:
        raise DataError(f"{path} says num_classes {num_classes} but lists {len(classes)} classes; make them agree.")
    return DatasetInfo(num_classes=num_classes, ignore_index=ignore, classes=classes, palette=palette,
                       name=str(data.get("name", path.parent.name)))


def _yaml_count(path: Path, info: DatasetInfo) -> ClassCount:
    return ClassCount(info.num_classes, str(path), f"fix num_classes in {path}")


def _pair_folder(split_dir: Path) -> List[Tuple[Path, Optional[Path]]]:
    images = list_images(split_dir / "images")
    if not images:
        raise DataError(f"{split_dir / 'images'} holds no images; put .jpg or .png files there.")
    labels_dir = split_dir / "labels"
    if not labels_dir.is_dir():
        return [(image, None) for image in images]
    labels = {p.stem: p for p in list_images(labels_dir)}
    pairs = [(image, labels.get(image.stem)) for image in images]
    missing = [image.name for image, label in pairs if label is None]
    if missing:
        raise DataError(
            f"{len(missing)} image(s) in {split_dir / 'images'} have no label of the same stem in "
            f"{labels_dir} (first: {missing[0]}); add the labels or remove those images.")
    orphans = set(labels) - {image.stem for image in images}
    if orphans:
        raise DataError(
            f"{len(orphans)} label(s) in {labels_dir} have no image (first: {sorted(orphans)[0]}); "
            f"images and labels must pair up by file stem.")
    return pairs


# Cityscapes labelIds -> the 19 train ids (all other ids are ignored).
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                         25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")


def _cityscapes_split(root: Path, split: str) -> SegmentationSplit:
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"Cityscapes root {root} has no leftImg8bit/{split}; choose a split that exists.")
    pairs: List[Tuple[Path, Optional[Path]]] = []
    use_train_ids = False
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label_dir = root / "gtFine" / split / image.parent.name
        train_ids = label_dir / f"{stem}_gtFine_labelTrainIds.png"
        label_ids = label_dir / f"{stem}_gtFine_labelIds.png"
        if train_ids.exists():
            pairs.append((image, train_ids))
            use_train_ids = True
        elif label_ids.exists():
            pairs.append((image, label_ids))
        else:
            raise DataError(f"Cityscapes image {image.name} has no gtFine label; check the gtFine/{split} folder.")
    if not pairs:
        raise DataError(f"{image_dir} holds no *_leftImg8bit.png images.")
    lut = None
    if not use_train_ids:
        lut = np.full(256, 255, dtype=np.uint8)
        for label_id, train_id in _CITYSCAPES_TRAIN_IDS.items():
            lut[label_id] = train_id
    info = DatasetInfo(num_classes=19, ignore_index=255, classes=CITYSCAPES_CLASSES, name="cityscapes")
    return SegmentationSplit(pairs, info, root, lut, classes=_layout_count(19, "Cityscapes", root))


def _layout_count(num_classes: int, layout: str, root: Path) -> ClassCount:
    """The class count a standard layout has when no dataset.yaml says otherwise."""
    return ClassCount(num_classes, f"the {layout} layout of {root} (no dataset.yaml beside it)",
                      f"put a dataset.yaml with num_classes (and classes, palette) in {root} if its labels are not "
                      f"{layout}'s {num_classes} classes")


def resolve_split(data: str | Path, split: str = "val", *, require_labels: bool = True,
                  classes: Optional[ClassCount] = None,
                  ignore_index: int = DEFAULT_IGNORE_INDEX) -> SegmentationSplit:
    """Find the images (and labels) of ``split`` in whatever layout ``data`` uses, and what its labels mean.

    The class count comes from a dataset.yaml, else the layout's standard (VOC, ADE20K,
    Cityscapes), else ``classes`` (the model's count, or ``--num-classes``); where the data
    says one and ``classes`` another, the two are refused in one sentence naming both.
    ``ignore_index`` is the unlabelled value where no dataset.yaml says it.

    >>> resolve_split("camvid/", "val", classes=ClassCount(11, "--num-classes"), ignore_index=11)  # doctest: +SKIP
    """
    if str(data).lower() == "synthetic":
        from edgeseg.data.synthetic import default_synthetic_root

        data = default_synthetic_root()
    root = Path(data)
    if not root.exists():
        raise DataError(f"Data folder {root} does not exist; give a dataset folder or the name 'synthetic'.")
    if not root.is_dir():
        raise DataError(f"--data {root} is a file; give a folder with images/ and labels/ (or train/ and val/).")
    if (root / "leftImg8bit").is_dir():
        result = _cityscapes_split(root, split)
    else:
        result = _known_layout_split(root, split, classes, ignore_index, require_labels)
    if result is None:
        if (root / "images").is_dir():
            split_dir = root
        elif (root / split / "images").is_dir():
            split_dir = root / split
        else:
            raise DataError(
                f"{root} has neither images/ nor {split}/images/; use a split folder with images/ and labels/, "
                f"or a dataset root with train/ and val/ splits.")
        pairs = _pair_folder(split_dir)
        if require_labels and pairs[0][1] is None:
            raise DataError(f"{split_dir} has no labels/ folder; labelled data is needed here.")
        yaml_path = _first_file(split_dir / "dataset.yaml", split_dir.parent / "dataset.yaml")
        result = _with_labels_described(pairs, split_dir, yaml_path, classes=classes, ignore_index=ignore_index,
                                        require_labels=require_labels)
    if classes is not None:
        check_class_count(classes, result)
    return result


def _first_file(*candidates: Path) -> Optional[Path]:
    return next((c for c in candidates if c.is_file()), None)


def _known_layout_split(root: Path, split: str, classes: Optional[ClassCount], ignore_index: int,
                        require_labels: bool) -> Optional[SegmentationSplit]:
    """Pascal VOC 2012 (or a custom dataset in its format), ADE20K or MMSegmentation's img_dir/ann_dir, else None."""
    from edgeseg.data import layouts

    voc = layouts.find_voc_root(root)
    if voc is not None:
        pairs = layouts.voc_pairs(voc, split)
        # CVAT, Labelme and others export custom classes in VOC's format: a dataset.yaml beside it says which
        yaml_path = _first_file(*(folder / "dataset.yaml" for folder in layouts.voc_yaml_folders(voc)))
        if yaml_path is not None:
            return _with_labels_described(pairs, voc, yaml_path, classes=classes, ignore_index=ignore_index,
                                          require_labels=require_labels)
        info = replace(layouts.voc_info(), ignore_index=ignore_index)
        return SegmentationSplit(pairs, info, voc, classes=_layout_count(21, "Pascal VOC", voc),
                                 ignore_index=ignore_index)
    ade = layouts.find_ade_root(root)
    if ade is not None:
        return SegmentationSplit(layouts.ade_pairs(ade, split), layouts.ade_info(), ade,
                                 layouts.reduce_zero_label_lut(), classes=_layout_count(150, "ADE20K", ade))
    if layouts.is_mmseg_root(root):
        pairs = layouts.mmseg_pairs(root, split)
        return _with_labels_described(pairs, root, _first_file(root / "dataset.yaml"), classes=classes,
                                      ignore_index=ignore_index, require_labels=require_labels)
    return None


def _with_labels_described(pairs, root: Path, yaml_path: Optional[Path], *, classes: Optional[ClassCount] = None,
                           ignore_index: int = DEFAULT_IGNORE_INDEX,
                           require_labels: bool = True) -> SegmentationSplit:
    """A split whose label meaning comes from dataset.yaml (classes, palette, ignore_index, label_format,
    reduce_zero_label), else from ``classes`` (the model's count or --num-classes) with ``ignore_index``."""
    options = _yaml_options(yaml_path) if yaml_path else {}
    info = load_dataset_yaml(yaml_path, ignore_index) if yaml_path else None
    lut = None
    if options.get("reduce_zero_label"):
        from edgeseg.data.layouts import reduce_zero_label_lut

        lut = reduce_zero_label_lut()
    colours = None
    if _colour_coded(pairs, options):
        if info is None or len(info.palette) != info.num_classes:
            raise DataError(f"The labels in {root} are RGB colour-coded; list one colour per class as `palette` in "
                            f"dataset.yaml (with num_classes) so edgeseg can map them to classes.")
        colours = np.asarray(info.palette, dtype=np.int32)
    if info is not None:
        count = _yaml_count(yaml_path, info)
    elif classes is not None:
        info = DatasetInfo(num_classes=classes.num_classes, ignore_index=ignore_index, name=root.name)
        count = ClassCount(classes.num_classes, f"{classes.said_by} ({root} has no dataset.yaml)",
                           f"add a dataset.yaml with num_classes to {root}")
    elif require_labels:
        raise undecided_classes(pairs, root, ignore_index)
    else:
        count = None  # images only; reading a label refuses
    return SegmentationSplit(pairs, info, root, lut, colours, count, ignore_index)


def _yaml_options(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}  # load_dataset_yaml reports it
    return {"label_format": str(data.get("label_format", "auto")).lower(),
            "reduce_zero_label": bool(data.get("reduce_zero_label", False))}


def _colour_coded(pairs, options: dict) -> bool:
    """label_format: rgb says so; by default the first label's own mode does."""
    label_format = options.get("label_format", "auto")
    if label_format in ("rgb", "color", "colour"):
        return True
    if label_format != "auto":
        return False
    first = next((label for _, label in pairs if label is not None), None)
    if first is None:
        return False
    from PIL import Image

    with Image.open(first) as image:
        return image.mode in ("RGB", "RGBA")


def dataset_info(data: str | Path, ignore_index: int = DEFAULT_IGNORE_INDEX) -> Optional[DatasetInfo]:
    """What the labels of ``data`` mean (its dataset.yaml, or its standard layout's), or None where nothing says
    it or it is no dataset edgeseg reads.

    Verbs that take a model made elsewhere use it for class names and palette; a folder
    of unlabelled images (e.g. export's verification images), or labels without a
    dataset.yaml, simply have none.
    """
    for split in ("val", "train"):
        try:
            return resolve_split(data, split, require_labels=False, ignore_index=ignore_index).info
        except DataError:
            continue
    return None
