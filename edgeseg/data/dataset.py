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

from edgeseg.data.images import list_images, read_image, read_label
from edgeseg.errors import DataError
from edgeseg.spec import DatasetInfo


@dataclass
class SegmentationSplit:
    """One split of a dataset: paired image and label files plus what the labels mean."""

    pairs: List[Tuple[Path, Optional[Path]]]
    info: DatasetInfo
    root: Path
    label_map: Optional[np.ndarray] = None  # lookup table raw label value -> class index

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
        return SegmentationSplit([self.pairs[i] for i in indices], self.info, self.root, self.label_map)


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
    info = None
    for candidate in (split_dir / "dataset.yaml", split_dir.parent / "dataset.yaml"):
        if candidate.exists():
            info = load_dataset_yaml(candidate)
            break
    if info is None:
        info = _infer_info_from_labels(pairs, split_dir.name)
    return SegmentationSplit(pairs, info, split_dir)


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
