"""Segmentation datasets as lists of (image, label) file pairs, readable without torch.

``resolve_split("camvid/", "val")`` accepts:
- a split folder (``images/`` + ``labels/`` with matching stems),
- a dataset root whose ``train/`` and ``val/`` folders are splits,
- a Cityscapes root (``leftImg8bit/`` + ``gtFine/``, mapped to the 19 train ids),
- the name ``synthetic``: edgeseg's own generated street scenes.
An optional ``dataset.yaml`` (in the split or its parent) names the classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.data.images import list_images, read_colour_label, read_image, read_label
from edgeseg.errors import DataError
from edgeseg.spec import DatasetInfo


@dataclass
class SegmentationSplit:
    """One split of a dataset: paired image and label files plus what the labels mean."""

    pairs: List[Tuple[Path, Optional[Path]]]
    info: DatasetInfo
    root: Path
    label_map: Optional[np.ndarray] = None  # lookup table raw label value -> class index
    label_colours: Optional[np.ndarray] = None  # Kx3 palette: labels are RGB colour-coded PNGs, colour k is class k

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
            raise DataError(
                f"Label {path} holds value {value}, outside classes 0..{info.num_classes - 1} and not the ignore "
                f"index {info.ignore_index}; fix the labels or num_classes/ignore_index in dataset.yaml.")

    def subset(self, indices: Sequence[int]) -> "SegmentationSplit":
        return SegmentationSplit([self.pairs[i] for i in indices], self.info, self.root, self.label_map,
                                 self.label_colours)


def load_dataset_yaml(path: Path) -> Optional[DatasetInfo]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path} is not valid YAML ({exc}); fix it or delete it.") from exc
    if "num_classes" not in data:
        raise DataError(f"{path} does not say num_classes; add it (for example `num_classes: 11`).")
    return DatasetInfo(
        num_classes=int(data["num_classes"]),
        ignore_index=int(data.get("ignore_index", 255)),
        classes=tuple(data.get("classes") or ()),
        palette=tuple(tuple(int(v) for v in c) for c in (data.get("palette") or ())),
        name=str(data.get("name", path.parent.name)),
    )


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


def _infer_info_from_labels(pairs, name: str) -> DatasetInfo:
    """Without dataset.yaml, count classes from the label values (255 is taken as ignore)."""
    highest = 0
    for _, label in pairs[:50]:
        if label is not None:
            values = np.unique(read_label(label))
            values = values[values != 255]
            if values.size:
                highest = max(highest, int(values.max()))
    return DatasetInfo(num_classes=highest + 1, ignore_index=255, name=name)


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
    return SegmentationSplit(pairs, info, root, lut)


def resolve_split(data: str | Path, split: str = "val", *, require_labels: bool = True) -> SegmentationSplit:
    """Find the images (and labels) of ``split`` in whatever layout ``data`` uses."""
    if str(data).lower() == "synthetic":
        from edgeseg.data.synthetic import default_synthetic_root

        data = default_synthetic_root()
    root = Path(data)
    if not root.exists():
        raise DataError(f"Data folder {root} does not exist; give a dataset folder or the name 'synthetic'.")
    if not root.is_dir():
        raise DataError(f"--data {root} is a file; give a folder with images/ and labels/ (or train/ and val/).")
    if (root / "leftImg8bit").is_dir():
        return _cityscapes_split(root, split)
    known = _known_layout_split(root, split)
    if known is not None:
        return known
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
    yaml_path = next((c for c in (split_dir / "dataset.yaml", split_dir.parent / "dataset.yaml") if c.exists()), None)
    return _with_labels_described(pairs, split_dir, yaml_path)


def _known_layout_split(root: Path, split: str) -> Optional[SegmentationSplit]:
    """Pascal VOC 2012, ADE20K or MMSegmentation's img_dir/ann_dir at ``root``, else None."""
    from edgeseg.data import layouts

    voc = layouts.find_voc_root(root)
    if voc is not None:
        return SegmentationSplit(layouts.voc_pairs(voc, split), layouts.voc_info(), voc)
    ade = layouts.find_ade_root(root)
    if ade is not None:
        return SegmentationSplit(layouts.ade_pairs(ade, split), layouts.ade_info(), ade,
                                 layouts.reduce_zero_label_lut())
    if layouts.is_mmseg_root(root):
        pairs = layouts.mmseg_pairs(root, split)
        yaml_path = root / "dataset.yaml"
        return _with_labels_described(pairs, root, yaml_path if yaml_path.exists() else None)
    return None


def _with_labels_described(pairs, root: Path, yaml_path: Optional[Path]) -> SegmentationSplit:
    """A split whose label meaning comes from dataset.yaml (classes, palette, label_format, reduce_zero_label)."""
    options = _yaml_options(yaml_path) if yaml_path else {}
    info = load_dataset_yaml(yaml_path) if yaml_path else None
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
    if info is None:
        info = _infer_info_from_labels(pairs, root.name)
    return SegmentationSplit(pairs, info, root, lut, colours)


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


def dataset_info(data: str | Path) -> Optional[DatasetInfo]:
    """What the labels of ``data`` mean (its dataset.yaml, else counted), or None when it is no dataset edgeseg reads.

    Verbs that take a model made elsewhere use it for class names and palette; a folder
    of unlabelled images (e.g. export's verification images) simply has none.
    """
    for split in ("val", "train"):
        try:
            return resolve_split(data, split, require_labels=False).info
        except DataError:
            continue
    return None
