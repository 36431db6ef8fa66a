"""Dataset layouts users already have, read in place: Pascal VOC 2012, ADE20K, MMSegmentation's img_dir/ann_dir.

Each reader returns the (image, label) pairs of one split plus what the labels mean:

- Pascal VOC 2012 (``VOCdevkit/VOC2012``): ``JPEGImages/``, palette PNGs in
  ``SegmentationClass/`` (the palette index is the class; 255 on object borders is
  ignored), split lists in ``ImageSets/Segmentation/{train,val}.txt``; 21 classes.
- ADE20K (``ADEChallengeData2016``): ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png``; label 0 ("other") is ignored and
  classes 1-150 shift down to 0-149, as MMSegmentation's ``reduce_zero_label`` does.
- MMSegmentation (``img_dir/{train,val}`` + ``ann_dir/{train,val}``): classes from a
  ``dataset.yaml`` at the root (``num_classes``, ``classes``, ``palette``, ``ignore_index``;
  ``reduce_zero_label: true`` shifts like ADE20K), else from the model or ``--num-classes``.

Deploy side: no torch, Python 3.8.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgeseg.data.images import list_images
from edgeseg.errors import DataError
from edgeseg.spec import DatasetInfo

Pairs = List[Tuple[Path, Optional[Path]]]

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
# the folder names each layout uses for edgeseg's split names
_ADE_SPLITS = {"train": "training", "val": "validation"}
_MMSEG_SPLITS = {"train": ("train", "training"), "val": ("val", "validation")}


def voc_palette(count: int = 256) -> Tuple[Tuple[int, int, int], ...]:
    """The colours VOC's palette PNGs use: class bits spread over the high bits of R, G and B."""
    colours = []
    for index in range(count):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def reduce_zero_label_lut() -> np.ndarray:
    """Raw label -> class: 0 (unlabelled) becomes 255 (ignored), 1..254 move down by one, 255 stays ignored."""
    lut = np.arange(256, dtype=np.int32) - 1
    lut[0] = lut[255] = 255
    return lut.astype(np.uint8)


def find_voc_root(root: Path) -> Optional[Path]:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    return None


def voc_yaml_folders(voc: Path) -> Tuple[Path, ...]:
    """Where a dataset.yaml describing a VOC-format folder may sit: the VOC root, its parent, and the folder above
    ``VOCdevkit/``."""
    folders = [voc, voc.parent]
    if voc.parent.name == "VOCdevkit":
        folders.append(voc.parent.parent)
    return tuple(folders)


def voc_pairs(root: Path, split: str) -> Pairs:
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"Pascal VOC root {root} has no ImageSets/Segmentation/{split}.txt; choose a split that "
                        f"exists (train, val, trainval).")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{listing} lists no images; it should hold one image id per line.")
    pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} file(s) listed in {listing} are missing (first: {missing[0]}); restore "
                        f"them or remove their ids from the list.")
    return pairs


def voc_info() -> DatasetInfo:
    return DatasetInfo(num_classes=21, ignore_index=255, classes=VOC_CLASSES, palette=voc_palette(21),
                       name="pascal_voc_2012")


def find_ade_root(root: Path) -> Optional[Path]:
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images" / "training").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    return None


def ade_pairs(root: Path, split: str) -> Pairs:
    folder = _ADE_SPLITS.get(split, split)
    return _paired_folders(root / "images" / folder, root / "annotations" / folder)


def ade_info() -> DatasetInfo:
    return DatasetInfo(num_classes=150, ignore_index=255, name="ade20k")


def is_mmseg_root(root: Path) -> bool:
    return (root / "img_dir").is_dir() and (root / "ann_dir").is_dir()


def mmseg_pairs(root: Path, split: str) -> Pairs:
    for folder in _MMSEG_SPLITS.get(split, (split,)):
        if (root / "img_dir" / folder).is_dir():
            return _paired_folders(root / "img_dir" / folder, root / "ann_dir" / folder)
    looked = ", ".join(_MMSEG_SPLITS.get(split, (split,)))
    raise DataError(f"{root}/img_dir has no {split} split (looked for {looked}); choose a split that exists.")


def has_split(root: Path, split: str) -> bool:
    """Whether one of these layouts at ``root`` holds ``split`` (so training can validate on it)."""
    voc = find_voc_root(root)
    if voc is not None:
        return (voc / "ImageSets" / "Segmentation" / f"{split}.txt").is_file()
    ade = find_ade_root(root)
    if ade is not None:
        return (ade / "images" / _ADE_SPLITS.get(split, split)).is_dir()
    if is_mmseg_root(root):
        return any((root / "img_dir" / f).is_dir() for f in _MMSEG_SPLITS.get(split, (split,)))
    return False


def _paired_folders(images_dir: Path, labels_dir: Path) -> Pairs:
    """Images paired with the label of the same stem (or stem + suffix, e.g. ``_labelTrainIds``)."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} does not exist; check the dataset's layout.")
    images = list_images(images_dir)
    if not images:
        raise DataError(f"{images_dir} holds no images; put .jpg or .png files there.")
    if not labels_dir.is_dir():
        return [(image, None) for image in images]
    labels = sorted(list_images(labels_dir))
    by_stem = {p.stem: p for p in labels}
    pairs = []
    for image in images:
        label = by_stem.get(image.stem)
        if label is None:
            prefixed = [p for p in labels if p.stem.startswith(image.stem + "_")]
            label = prefixed[0] if len(prefixed) == 1 else None
        if label is None:
            raise DataError(f"Image {image.name} has no label of the same name in {labels_dir}; add it or remove "
                            f"the image.")
        pairs.append((image, label))
    return pairs
