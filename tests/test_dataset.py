import numpy as np
import pytest
from PIL import Image

from edgeseg.data.dataset import ClassCount, resolve_split
from edgeseg.errors import DataError


def _split(folder, count=2, size=(8, 10), label_value=1):
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(folder / "images" / f"im{i}.jpg")
        Image.fromarray(np.full(size, label_value, np.uint8)).save(folder / "labels" / f"im{i}.png")


def test_split_folder_with_dataset_yaml(tmp_path):
    _split(tmp_path / "val")
    (tmp_path / "dataset.yaml").write_text("num_classes: 3\nignore_index: 7\nclasses: [a, b, c]\n")
    split = resolve_split(tmp_path, "val")
    assert split.info.num_classes == 3 and split.info.ignore_index == 7
    assert split.image(0).shape == (8, 10, 3) and split.label(0).max() == 1
    # the split folder itself works too
    assert len(resolve_split(tmp_path / "val")) == 2


def test_without_yaml_the_class_count_is_given_not_guessed(tmp_path):
    _split(tmp_path, label_value=4)
    with pytest.raises(DataError, match="labels hold the values 4; add a dataset.yaml"):
        resolve_split(tmp_path)  # the largest label (4) says nothing about the class count
    split = resolve_split(tmp_path, classes=ClassCount(7, "--num-classes"))
    assert split.info.num_classes == 7 and split.info.ignore_index == 255 and split.label(0).max() == 4


def test_image_without_label_is_a_clear_error(tmp_path):
    _split(tmp_path)
    (tmp_path / "labels" / "im1.png").unlink()
    with pytest.raises(DataError, match="have no label"):
        resolve_split(tmp_path)


def test_label_without_image_is_a_clear_error(tmp_path):
    _split(tmp_path)
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(tmp_path / "labels" / "extra.png")
    with pytest.raises(DataError, match="have no image"):
        resolve_split(tmp_path)


def test_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        resolve_split(tmp_path)


def test_label_values_outside_classes(tmp_path):
    _split(tmp_path, label_value=9)
    (tmp_path / "dataset.yaml").write_text("num_classes: 3\nignore_index: 255\n")
    with pytest.raises(DataError, match="outside classes 0..2"):
        resolve_split(tmp_path).label(0)


def test_sixteen_bit_image_refused(tmp_path):
    _split(tmp_path)
    Image.fromarray(np.full((8, 10), 4000, np.uint16)).save(tmp_path / "images" / "im0.png")
    (tmp_path / "images" / "im0.jpg").unlink()
    with pytest.raises(DataError, match="16/32-bit"):
        resolve_split(tmp_path, require_labels=False).image(0)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    _split(tmp_path)
    gray = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (8, 1))  # 8x10, lossless in PNG
    Image.fromarray(gray).save(tmp_path / "images" / "im0.png")
    rgba = np.dstack([np.full((8, 10), v, np.uint8) for v in (10, 20, 30, 40)])
    Image.fromarray(rgba).save(tmp_path / "images" / "im1.png")
    for name in ("im0.jpg", "im1.jpg"):
        (tmp_path / "images" / name).unlink()
    split = resolve_split(tmp_path, require_labels=False)
    # grey is copied into all three channels; RGBA drops alpha and keeps the colour
    assert split.image(0).shape == (8, 10, 3) and all((split.image(0)[..., c] == gray).all() for c in range(3))
    assert split.image(1).shape == (8, 10, 3) and (split.image(1) == [10, 20, 30]).all()


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_split(tmp_path / "nope")


def test_cityscapes_layout_maps_label_ids_to_train_ids(tmp_path):
    image_dir = tmp_path / "leftImg8bit" / "val" / "aachen"
    label_dir = tmp_path / "gtFine" / "val" / "aachen"
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image_dir / "aachen_000000_000019_leftImg8bit.png")
    ids = np.array([[7, 8, 26, 0]] * 4, np.uint8)  # road, sidewalk, car, unlabeled
    Image.fromarray(ids).save(label_dir / "aachen_000000_000019_gtFine_labelIds.png")
    split = resolve_split(tmp_path, "val")
    assert split.info.num_classes == 19
    assert split.label(0)[0].tolist() == [0, 1, 13, 255]
