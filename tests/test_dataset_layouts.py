"""Datasets in the layouts users have: each generated small, in its real folder structure, and read in place."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeseg.data.dataset import ClassCount, resolve_split
from edgeseg.data.layouts import voc_palette
from edgeseg.errors import DataError
from edgeseg.training.data import training_splits


def _image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)


def _classes(seed, high, border=None):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, high, (24, 32), dtype=np.uint8)
    if border is not None:
        label[0, :] = border
    return label


def _save_label(path, label, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label, mode="P" if palette is not None else "L")
    if palette is not None:  # a palette PNG, as VOC ships: the index is the class, the colour only for viewing
        image.putpalette([v for colour in palette for v in colour])
    image.save(path)


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    labels = {}
    splits = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000012"]}
    for split, ids in splits.items():
        for n, image_id in enumerate(ids):
            _image(root / "JPEGImages" / f"{image_id}.jpg", n)
            labels[image_id] = _classes(n + 10 * len(split), 21, border=255)
            _save_label(root / "SegmentationClass" / f"{image_id}.png", labels[image_id], voc_palette(256))
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    _image(root / "JPEGImages" / "2010_000001.jpg", 99)  # detection-only images are not in the lists
    return tmp_path / "VOCdevkit", labels


def test_pascal_voc_2012(voc):
    root, labels = voc
    split = resolve_split(root, "val")
    assert [p[0].stem for p in split.pairs] == ["2007_000033", "2009_000012"]
    assert split.info.num_classes == 21 and split.info.classes[15] == "person" and split.info.ignore_index == 255
    assert split.info.palette[15] == (192, 128, 128)  # VOC's colour for person
    np.testing.assert_array_equal(split.label(0), labels["2007_000033"])  # palette index = class, 255 kept
    train, val = training_splits(root)
    assert len(train) == 3 and val is not None and len(val) == 2
    with pytest.raises(DataError, match="ImageSets/Segmentation/test.txt"):
        resolve_split(root / "VOC2012", "test")


def test_pascal_voc_trains_in_place(voc, tmp_path):
    from edgeseg.cli.main import cli

    root, _ = voc
    result = CliRunner().invoke(cli, ["train", "--arch", "unet", "--arch-arg", "base_channels=4", "--data", str(root),
                                      "--epochs", "1", "--batch-size", "2", "--input-size", "24x32", "--val-every", "1",
                                      "--no-tensorboard", "--out", str(tmp_path / "voc.pt")])
    assert result.exit_code == 0, result.output
    import json

    meta = json.loads((tmp_path / "voc.pt.json").read_text())
    assert meta["dataset"]["name"] == "pascal_voc_2012" and meta["dataset"]["classes"][0] == "background"


def test_ade20k_ignores_zero_and_shifts_classes(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    raw = {}
    for folder, stem in (("training", "ADE_train_00000001"), ("training", "ADE_train_00000002"),
                         ("validation", "ADE_val_00000001")):
        _image(root / "images" / folder / f"{stem}.jpg", len(raw))
        raw[stem] = _classes(len(raw), 151)
        raw[stem][0, :3] = (0, 1, 150)
        _save_label(root / "annotations" / folder / f"{stem}.png", raw[stem])
    split = resolve_split(tmp_path, "train")
    assert len(split) == 2 and split.info.num_classes == 150 and split.info.ignore_index == 255
    label = split.label(0)
    assert tuple(label[0, :3]) == (255, 0, 149)
    expected = np.where(raw["ADE_train_00000001"] == 0, 255, raw["ADE_train_00000001"].astype(int) - 1)
    np.testing.assert_array_equal(label, expected)
    assert len(resolve_split(root, "val")) == 1 and training_splits(root)[1] is not None


def test_mmsegmentation_img_dir_ann_dir(tmp_path):
    root = tmp_path / "mydata"
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            _image(root / "img_dir" / split / f"frame{i}.jpg", i)
            _save_label(root / "ann_dir" / split / f"frame{i}_labelTrainIds.png", _classes(i, 5, border=255))
    split = resolve_split(root, "val", require_labels=False)  # images only: nothing needs the class count yet
    assert [p[1].name for p in split.pairs] == ["frame0_labelTrainIds.png", "frame1_labelTrainIds.png"]
    with pytest.raises(DataError, match="hold the values 0-4, 255"):  # no dataset.yaml: nothing says the count
        split.label(0)
    assert resolve_split(root, "val", classes=ClassCount(5, "--num-classes")).info.num_classes == 5
    (root / "dataset.yaml").write_text("num_classes: 4\nclasses: [a, b, c, d]\nreduce_zero_label: true\n")
    split = resolve_split(root, "train")
    assert split.info.classes == ("a", "b", "c", "d")
    raw = _classes(0, 5, border=255)
    np.testing.assert_array_equal(split.label(0), np.where((raw == 0) | (raw == 255), 255, raw.astype(int) - 1))
    assert training_splits(root)[1] is not None


def test_rgb_colour_coded_labels_through_the_palette(tmp_path):
    palette = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128)]  # CamVid's first four colours
    split_dir = tmp_path / "camvid32" / "train"
    classes = _classes(1, 4)
    rgb = np.array(palette, dtype=np.uint8)[classes]
    rgb[0, 0] = (0, 0, 0)  # CamVid's "Void" colour is in no class
    _image(split_dir / "images" / "0001TP_006690.png", 1)
    (split_dir / "labels").mkdir()
    Image.fromarray(rgb).save(split_dir / "labels" / "0001TP_006690.png")
    with pytest.raises(DataError, match="RGB colour-coded; list one colour per class as `palette`"):
        resolve_split(split_dir, "train").label(0)
    (tmp_path / "camvid32" / "dataset.yaml").write_text(
        "num_classes: 4\nignore_index: 255\npalette:\n" + "".join(f"  - [{r}, {g}, {b}]\n" for r, g, b in palette))
    label = resolve_split(split_dir, "train").label(0)
    expected = classes.copy()
    expected[0, 0] = 255
    np.testing.assert_array_equal(label, expected)
