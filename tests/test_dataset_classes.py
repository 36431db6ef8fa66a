"""Datasets as users have them: what decides the class count and the ignore index, and the refusals.

Label folders are built here with known values (a CamVid-like split whose ignore value is
11, a subset lacking the top class, VOC-format and MMSegmentation folders with their own
dataset.yaml). The model is a hand-made ONNX (one 1x1 convolution) whose class is a known
function of a pixel's red value, so the mIoU eval reports is recomputed here from a
confusion matrix built with numpy, never by asking edgeseg.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from edgeseg.cli.main import cli
from edgeseg.data.dataset import ClassCount, dataset_info, resolve_split
from edgeseg.data.layouts import voc_palette
from edgeseg.errors import DataError
from edgeseg.training.data import training_splits

SIZE = 16
# what edgeseg normalises with when a model records no mean/std (ImageNet's R, in 0-255 units)
MEAN_R, STD_R = 123.675, 58.395


def _red_for(cls: int, num_classes: int) -> int:
    return int(round(255 * cls / (num_classes - 1)))


def _ramp_onnx(path: Path, num_classes: int, sidecar: bool = True, ignore_index: int = 255) -> Path:
    """A 1x1 conv whose logits c * (K-1) * R/255 - c^2/2 peak at c = round((K-1) * R/255); its sidecar (an
    edgeseg-made artifact) says ``num_classes``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.sidecar import write_sidecar
    from edgeseg.spec import DatasetInfo, InputSpec

    k = np.arange(num_classes, dtype=np.float64)
    weight = np.zeros((num_classes, 3, 1, 1), np.float32)
    weight[:, 0, 0, 0] = k * (num_classes - 1) * STD_R / 255
    bias = (k * (num_classes - 1) * MEAN_R / 255 - k * k / 2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["logits"])], "ramp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", num_classes, SIZE, SIZE])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    if sidecar:
        write_sidecar(path, "onnx", input_spec=InputSpec(SIZE, SIZE),
                      dataset=DatasetInfo(num_classes, ignore_index=ignore_index))
    return path


def _split(folder: Path, labels, image_classes, num_classes: int = 11) -> None:
    """images/ (PNG: lossless, so the ramp model's prediction is known) + labels/ holding ``labels``; image i's
    pixels are coloured so that the ramp model predicts ``image_classes[i]``."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir(parents=True)
    for i, (label, classes) in enumerate(zip(labels, image_classes)):
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        image[..., 0] = np.vectorize(lambda c: _red_for(c, num_classes))(classes)
        image[..., 1], image[..., 2] = 90, 160
        Image.fromarray(image).save(folder / "images" / f"f{i}.png")
        Image.fromarray(np.asarray(label, np.uint8)).save(folder / "labels" / f"f{i}.png")


def _camvid_like(root: Path, highest: int = 11, count: int = 3, seed: int = 0):
    """A val split whose labels hold 0..highest (CamVid: 0-10 classes, 11 void); returns (labels, predicted)."""
    rng = np.random.default_rng(seed)
    labels = [rng.integers(0, highest + 1, (SIZE, SIZE)) for _ in range(count)]
    for label in labels:
        label.flat[: highest + 1] = np.arange(highest + 1)  # every value occurs
    predicted = [np.where(rng.random((SIZE, SIZE)) < 0.6, np.minimum(label, 10), rng.integers(0, 11, (SIZE, SIZE)))
                 for label in labels]
    _split(root / "val", labels, predicted)
    return labels, predicted


def _miou_by_hand(labels, predicted, num_classes: int, ignore: int) -> float:
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for label, pred in zip(labels, predicted):
        keep = (label != ignore) & (label < num_classes)
        np.add.at(confusion, (label[keep], pred[keep]), 1)
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float(np.mean(100 * tp[present] / union[present]))


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- what decides the class count ------------------------------------------------------------------------------


def test_dataset_yaml_with_ignore_11_gives_11_classes(tmp_path):
    labels, _ = _camvid_like(tmp_path)
    (tmp_path / "dataset.yaml").write_text("num_classes: 11\nignore_index: 11\n")
    split = resolve_split(tmp_path, "val", ignore_index=255)  # dataset.yaml's ignore_index wins over the option
    assert (split.info.num_classes, split.info.ignore_index) == (11, 11)
    assert split.classes == ClassCount(11, str(tmp_path / "dataset.yaml"), f"fix num_classes in {tmp_path / 'dataset.yaml'}")
    np.testing.assert_array_equal(split.label(0), labels[0])  # 11 is ignored, not refused


def test_without_dataset_yaml_nothing_is_guessed(tmp_path):
    _camvid_like(tmp_path)
    split_dir = tmp_path / "val"
    with pytest.raises(DataError) as caught:
        resolve_split(tmp_path, "val")
    assert str(caught.value) == (
        f"Nothing says how many classes {split_dir} has (no dataset.yaml in it or its parent, no model or "
        f"--num-classes, and edgeseg does not guess from the largest label) and its labels hold the values 0-11; add "
        f"a dataset.yaml with `num_classes:` (and `ignore_index:` for the value that marks unlabelled pixels, 255 if "
        f"none is given) or pass num_classes=N (and ignore_index=V).")  # Python's words in Python
    given = resolve_split(tmp_path, "val", classes=ClassCount(11, "--num-classes", "change --num-classes"),
                          ignore_index=11)
    assert (given.info.num_classes, given.info.ignore_index) == (11, 11)
    # the same count with the default ignore index: 11 is a label value outside the classes, named with its fix
    default = resolve_split(tmp_path, "val", classes=ClassCount(11, "--num-classes", "change --num-classes"))
    first = sorted((split_dir / "labels").iterdir())[0]
    with pytest.raises(DataError) as caught:
        default.label(0)
    assert str(caught.value) == (
        f"Label {first} holds value 11, outside classes 0..10 (--num-classes ({split_dir} has no dataset.yaml) says "
        f"11) and not the ignore index 255; fix the labels, or set num_classes/ignore_index in dataset.yaml (or "
        f"num_classes=/ignore_index= where no dataset.yaml is).")
    # images alone (export's verification images) need no class count, and name none
    assert resolve_split(tmp_path, "val", require_labels=False).info is None
    assert dataset_info(tmp_path) is None


def test_dataset_yaml_that_disagrees_with_the_given_count_is_refused(tmp_path):
    _camvid_like(tmp_path)
    yaml_path = tmp_path / "dataset.yaml"
    yaml_path.write_text("num_classes: 12\nignore_index: 255\n")
    with pytest.raises(DataError) as caught:
        resolve_split(tmp_path, "val", classes=ClassCount(11, "--num-classes", "change --num-classes"))
    assert str(caught.value) == (f"--num-classes says 11 classes but {yaml_path} says 12; fix num_classes in "
                                 f"{yaml_path}, or change --num-classes.")


def test_train_without_dataset_yaml_or_num_classes_is_refused(tmp_path):
    _camvid_like(tmp_path / "camvid")
    (tmp_path / "camvid" / "train").symlink_to(tmp_path / "camvid" / "val")
    out = tmp_path / "m.pt"
    result = _invoke(["train", "--arch", "unet", "--data", tmp_path / "camvid", "--out", out, "--epochs", 1])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: Nothing says how many classes {tmp_path / 'camvid' / 'train'} has")
    assert "labels hold the values 0-11;" in result.stderr and "--num-classes N (and --ignore-index V)" in result.stderr
    assert not out.exists() and not list(tmp_path.glob("m.*"))


def test_subset_lacking_the_top_class_takes_the_models_count(tmp_path):
    """Labels 0-5 only (no dataset.yaml): the model's sidecar says 11 classes, and mIoU is over those 11."""
    labels, predicted = _camvid_like(tmp_path, highest=5)
    model = _ramp_onnx(tmp_path / "ramp.onnx", 11)
    out = tmp_path / "eval.json"
    result = _invoke(["eval", model, "--data", tmp_path, "--json", out])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert len(written["per_class_iou"]) == 11 and np.asarray(written["confusion"]).shape == (11, 11)
    assert written["miou"] == pytest.approx(_miou_by_hand(labels, predicted, 11, 255), abs=1e-3)


def test_camvid_ignore_11_through_eval(tmp_path):
    """--ignore-index 11 on a folder without dataset.yaml: label 11 is left out of the confusion matrix."""
    labels, predicted = _camvid_like(tmp_path)
    model = _ramp_onnx(tmp_path / "ramp.onnx", 11)
    out = tmp_path / "eval.json"
    result = _invoke(["eval", model, "--data", tmp_path, "--ignore-index", 11, "--json", out])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert np.asarray(written["confusion"]).sum() == sum(int((label != 11).sum()) for label in labels)
    assert written["miou"] == pytest.approx(_miou_by_hand(labels, predicted, 11, 11), abs=1e-3)
    # without it, 11 is a value outside the model's 11 classes: one sentence, exit 2, no JSON
    out.unlink()
    result = _invoke(["eval", model, "--data", tmp_path, "--json", out])
    assert result.exit_code == 2 and "holds value 11, outside classes 0..10 (ramp.onnx's sidecar" in result.stderr
    assert not out.exists()


def test_a_model_trained_with_ignore_11_is_measured_with_it(tmp_path):
    """train --ignore-index 11 on a folder without dataset.yaml records it; eval, bench and report then leave label 11
    out without being told again, and an explicit --ignore-index still wins."""
    labels, predicted = _camvid_like(tmp_path)
    model = _ramp_onnx(tmp_path / "ramp.onnx", 11, ignore_index=11)
    out = tmp_path / "eval.json"
    result = _invoke(["eval", model, "--data", tmp_path, "--json", out])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert np.asarray(written["confusion"]).sum() == sum(int((label != 11).sum()) for label in labels)
    assert written["miou"] == pytest.approx(_miou_by_hand(labels, predicted, 11, 11), abs=1e-3)
    benched = tmp_path / "bench.json"
    result = _invoke(["bench", model, "--data", tmp_path, "--iters", 1, "--warmup", 0, "--json", benched])
    assert result.exit_code == 0, result.output
    assert json.loads(benched.read_text())["miou"] == pytest.approx(written["miou"], abs=1e-6)
    out.unlink()
    result = _invoke(["eval", model, "--data", tmp_path, "--ignore-index", 255, "--json", out])
    assert result.exit_code == 2 and "holds value 11, outside classes 0..10" in result.stderr and not out.exists()


def test_a_foreign_model_on_a_voc_folder_without_ignore_index(tmp_path):
    """An ONNX from another tool (no sidecar) with --data a VOC folder and no --ignore-index: eval and bench default to
    the model's value, which it does not record, so VOC's own 255 is used (it crashed on None) and the VOC class
    names reach the results."""
    label = np.zeros((SIZE, SIZE), np.int64)
    label[:, 8:], label[0, :] = 9, 255
    _voc(tmp_path, [label, label.copy()], rgb=False)
    model = _ramp_onnx(tmp_path / "foreign.onnx", 21, sidecar=False)
    for verb in (["eval"], ["bench", "--iters", 1, "--warmup", 0]):
        out = tmp_path / f"{verb[0]}.json"
        result = _invoke(verb + [model, "--data", tmp_path, "--input-size", f"{SIZE}x{SIZE}", "--json", out])
        assert result.exit_code == 0, result.output
        assert 0 <= json.loads(out.read_text())["miou"] <= 100
    per_class = json.loads((tmp_path / "eval.json").read_text())["per_class_iou"]
    assert len(per_class) == 21 and list(per_class)[:2] == ["background", "aeroplane"]


def test_model_and_dataset_yaml_disagreeing_names_both(tmp_path):
    _camvid_like(tmp_path)
    yaml_path = tmp_path / "dataset.yaml"
    yaml_path.write_text("num_classes: 12\nignore_index: 255\n")
    model = _ramp_onnx(tmp_path / "model.onnx", 11)
    out = tmp_path / "eval.json"
    result = _invoke(["eval", model, "--data", tmp_path, "--json", out])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: model.onnx's sidecar says 11 classes but {yaml_path} says 12; fix num_classes "
                             f"in {yaml_path}, or use a model trained for this data.\n")
    assert not out.exists()


def test_bench_models_that_disagree_on_data_without_yaml(tmp_path):
    _camvid_like(tmp_path, highest=5)
    first, second = _ramp_onnx(tmp_path / "a.onnx", 11), _ramp_onnx(tmp_path / "b.onnx", 12)
    out = tmp_path / "bench.json"
    result = _invoke(["bench", first, second, "--data", tmp_path, "--iters", 1, "--warmup", 0, "--json", out])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: b.onnx's sidecar says 12 classes but a.onnx's sidecar ({tmp_path / 'val'} has "
                             f"no dataset.yaml) says 11; add a dataset.yaml with num_classes to {tmp_path / 'val'}, "
                             f"or use a model trained for this data.\n")
    assert not out.exists()


def test_model_verbs_use_the_models_count_where_data_says_none(tmp_path):
    """calibrate's accuracy data and prune's training data resolve with the model's count."""
    from edgeseg.quant.sensitivity import load_eval_set
    from edgeseg.spec import InputSpec

    _camvid_like(tmp_path)
    evalset = load_eval_set(str(tmp_path), InputSpec(SIZE, SIZE), classes=ClassCount(11, "model.onnx's sidecar"),
                            ignore_index=11)
    assert (evalset.info.num_classes, evalset.info.ignore_index, len(evalset.labels)) == (11, 11, 3)
    (tmp_path / "train").symlink_to(tmp_path / "val")
    train, val = training_splits(tmp_path, classes=ClassCount(11, "pruned.pt's checkpoint"), ignore_index=11)
    assert [(s.info.num_classes, s.info.ignore_index) for s in (train, val)] == [(11, 11), (11, 11)]
    assert train.classes.said_by == f"pruned.pt's checkpoint ({tmp_path / 'train'} has no dataset.yaml)"


# --- layouts users export -------------------------------------------------------------------------------------


def _voc(root: Path, labels, rgb: bool, palette=None) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for i, label in enumerate(labels):
        Image.fromarray(np.full((SIZE, SIZE, 3), 120, np.uint8)).save(voc / "JPEGImages" / f"im{i}.jpg")
        if rgb:  # CVAT's and Labelme's exports: RGB colour-coded masks
            colours = np.asarray(palette + [(224, 224, 192)], np.uint8)  # VOC's void colour last
            Image.fromarray(colours[np.where(label == 255, len(palette), label)]).save(
                voc / "SegmentationClass" / f"im{i}.png")
        else:  # palette PNGs: the index is the class
            image = Image.fromarray(np.asarray(label, np.uint8), mode="P")
            image.putpalette([v for c in voc_palette(256) for v in c])
            image.save(voc / "SegmentationClass" / f"im{i}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"im{i}\n" for i in range(len(labels))))
    return voc


def _three_class_labels():
    label = np.zeros((SIZE, SIZE), np.int64)
    label[:, 5:10], label[:, 10:], label[0, :] = 1, 2, 255
    return [label, label.T.copy()]


PALETTE3 = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]


def test_voc_format_export_with_dataset_yaml_beside_vocdevkit(tmp_path):
    labels = _three_class_labels()
    _voc(tmp_path, labels, rgb=True, palette=PALETTE3)
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(
        {"num_classes": 3, "classes": ["background", "cat", "dog"], "palette": [list(c) for c in PALETTE3]}))
    split = resolve_split(tmp_path, "val")
    assert (split.info.num_classes, split.info.ignore_index) == (3, 255)
    assert split.info.classes == ("background", "cat", "dog") and split.info.palette == tuple(PALETTE3)
    for i, label in enumerate(labels):  # colours decoded to classes, VOC's void colour to the ignore index
        np.testing.assert_array_equal(split.label(i), label)
    assert dataset_info(tmp_path).classes == ("background", "cat", "dog")


def test_voc_format_palette_pngs_with_dataset_yaml_in_the_voc_root(tmp_path):
    labels = _three_class_labels()
    voc = _voc(tmp_path, labels, rgb=False, palette=PALETTE3)
    (voc / "dataset.yaml").write_text("classes: [background, cat, dog]\nignore_index: 255\n")
    split = resolve_split(voc, "val")
    assert split.info.num_classes == 3 and split.classes.said_by == str(voc / "dataset.yaml")
    np.testing.assert_array_equal(split.label(1), labels[1])


def test_voc_without_dataset_yaml_keeps_its_21_classes(tmp_path):
    voc = _voc(tmp_path, _three_class_labels(), rgb=False)
    split = resolve_split(tmp_path, "val")
    assert split.info.num_classes == 21 and split.info.classes[20] == "tvmonitor"
    with pytest.raises(DataError) as caught:
        resolve_split(tmp_path, "val", classes=ClassCount(3, "model.onnx's sidecar"))
    assert str(caught.value) == (
        f"model.onnx's sidecar says 3 classes but the Pascal VOC layout of {voc} (no dataset.yaml beside it) says 21; "
        f"put a dataset.yaml with num_classes (and classes, palette) in {voc} if its labels are not Pascal VOC's 21 "
        f"classes, or use a model trained for this data.")


def test_mmseg_dataset_yaml_is_read_whole(tmp_path):
    root = tmp_path / "mydata"
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[:, 4:8], label[:, 8:12], label[:, 12:] = 1, 2, 9
    for folder in ("img_dir/val", "ann_dir/val"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.full((SIZE, SIZE, 3), 50, np.uint8)).save(root / "img_dir/val/a.jpg")
    Image.fromarray(label).save(root / "ann_dir/val/a.png")
    (root / "dataset.yaml").write_text(yaml.safe_dump(
        {"classes": ["road", "car", "sky"], "palette": [list(c) for c in PALETTE3], "ignore_index": 9}))
    split = resolve_split(root, "val")
    assert (split.info.num_classes, split.info.ignore_index) == (3, 9)
    assert split.info.classes == ("road", "car", "sky") and split.info.palette == tuple(PALETTE3)
    np.testing.assert_array_equal(split.label(0), label)
    # reduce_zero_label: 0 -> ignored (255), 1, 2 -> 0, 1; the raw 9 shifts to 8, outside the 2 classes
    (root / "dataset.yaml").write_text("classes: [car, sky]\nreduce_zero_label: true\n")
    reduced = resolve_split(root, "val")
    with pytest.raises(DataError, match=r"holds value 8, outside classes 0\.\.1 \(.*dataset\.yaml says 2\)"):
        reduced.label(0)


def test_dataset_yaml_whose_classes_and_count_disagree_is_refused(tmp_path):
    _camvid_like(tmp_path)
    (tmp_path / "dataset.yaml").write_text("num_classes: 4\nclasses: [a, b, c]\n")
    with pytest.raises(DataError) as caught:
        resolve_split(tmp_path, "val")
    assert str(caught.value) == (f"{tmp_path / 'dataset.yaml'} says num_classes 4 but lists 3 classes; make them "
                                 f"agree.")


# --- the options --------------------------------------------------------------------------------------------------


def test_every_verb_with_data_takes_ignore_index():
    import click

    ctx = click.Context(cli)
    with_data = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        params = {p.name: p for p in command.params}
        if "data" in params:
            with_data.append(name)
            option = params.get("ignore_index")
            assert option is not None, f"{name} takes --data but not --ignore-index"
            assert "dataset.yaml's ignore_index wins" in option.help
            # the verbs that measure a model default to the value it was trained with; the others to 255
            measuring = name in ("bench", "eval", "report")
            assert option.default == (None if measuring else 255), name
            assert ("the one the model was trained with, else 255" in option.help) == measuring, name
    assert {"train", "distill", "prune", "calibrate", "bench", "eval", "predict", "report", "export"} <= set(with_data)
    train = {p.name: p for p in cli.get_command(ctx, "train").params}
    assert "dataset.yaml's num_classes wins" in train["num_classes"].help


def test_predict_data_without_dataset_yaml_is_refused(tmp_path):
    _camvid_like(tmp_path)
    model = _ramp_onnx(tmp_path / "ramp.onnx", 11)
    out = tmp_path / "masks"
    result = _invoke(["predict", model, tmp_path / "val" / "images", "--data", tmp_path, "--out", out])
    assert result.exit_code == 2 and "names no classes: it is no dataset edgeseg reads, or has no dataset.yaml" in result.stderr
    assert not out.exists()


def test_distill_on_data_without_yaml_takes_the_teachers_count(tmp_path):
    """No dataset.yaml and labels 0-1 only: the teacher's 3 classes decide, and the student is made for 3."""
    from edgeseg.arch import create_model
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.distillation.api import distill
    from edgeseg.spec import InputSpec

    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 2, (SIZE, SIZE)) for _ in range(2)]
    _split(tmp_path / "data" / "train", labels, labels)
    teacher = tmp_path / "t.pt"
    save_checkpoint(teacher, create_model("unet", 3, base_channels=4, encoder_depth=2), arch="unet", num_classes=3,
                    input_spec=InputSpec(SIZE, SIZE), dataset=None, arch_args={"base_channels": 4, "encoder_depth": 2})
    out = tmp_path / "s.pt"
    sidecar = distill(str(teacher), str(tmp_path / "data"), str(out), student="unet", epochs=1, batch_size=2,
                      student_args={"base_channels": 4, "encoder_depth": 2}, backbone_weights="scratch",
                      tensorboard=False)
    assert sidecar["dataset"]["num_classes"] == 3 and sidecar["model"]["num_classes"] == 3
    assert json.loads(out.with_name("s.pt.json").read_text())["dataset"]["ignore_index"] == 255
