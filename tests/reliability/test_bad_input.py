"""A catalogue of mistakes users make, and what edgeseg answers to each.

Every case runs the real command line and must end with one sentence saying what is
wrong (``Error: ...``), a non-zero exit code, no traceback, and no output file. Case ids
start with their category; tests/reliability/conftest.py counts them by category.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeseg.cli.main import cli
from tests.reliability.argv import fill


def _split(folder: Path, count: int = 4, size=(64, 64), label_value: int = 1, mode: str = "RGB") -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir(parents=True)
    for i in range(count):
        pixels = np.full((*size, 3), 100 + i, np.uint8)
        if mode == "I;16":
            Image.fromarray(np.full(size, 30000, np.uint16)).save(folder / "images" / f"im{i}.png")
        elif mode in ("L", "RGBA"):
            Image.fromarray(pixels).convert(mode).save(folder / "images" / f"im{i}.png")
        else:
            Image.fromarray(pixels).save(folder / "images" / f"im{i}.png")
        Image.fromarray(np.full(size, label_value, np.uint8)).save(folder / "labels" / f"im{i}.png")
    return folder


def _dataset(root: Path, **split_options) -> Path:
    _split(root / "train", **split_options)
    _split(root / "val", **split_options)
    return root


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_student, tiny_onnx):
    """Broken files and datasets the cases refer to by name."""
    root = tmp_path_factory.mktemp("bad")
    files = {"student": tiny_student, "onnx": tiny_onnx, "root": root}
    files["empty.pt"] = root / "empty.pt"
    files["empty.pt"].write_bytes(b"")
    files["truncated.pt"] = root / "truncated.pt"
    files["truncated.pt"].write_bytes(tiny_student.read_bytes()[: tiny_student.stat().st_size // 2])
    files["text.pt"] = root / "text.pt"
    files["text.pt"].write_text("these are not weights\n")
    files["empty.onnx"] = root / "empty.onnx"
    files["empty.onnx"].write_bytes(b"")
    files["truncated.onnx"] = root / "truncated.onnx"
    files["truncated.onnx"].write_bytes(tiny_onnx.read_bytes()[:2000])
    shutil.copy(tiny_onnx.with_name(tiny_onnx.name + ".json"), root / "truncated.onnx.json")
    files["text.onnx"] = root / "text.onnx"
    files["text.onnx"].write_text("not a graph\n")
    shutil.copy(tiny_onnx.with_name(tiny_onnx.name + ".json"), root / "text.onnx.json")
    files["no-sidecar.onnx"] = root / "no-sidecar.onnx"  # as another tool exports it: any size, no sidecar
    graph = onnx.load(str(tiny_onnx))
    for dim, name in zip(graph.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
        dim.dim_param = name
    onnx.save(graph, str(files["no-sidecar.onnx"]))
    files["tampered.engine"] = root / "tampered.engine"
    files["tampered.engine"].write_bytes(b"engine bytes")
    (root / "tampered.engine.json").write_text(
        tiny_onnx.with_name(tiny_onnx.name + ".json").read_text().replace('"kind": "onnx"', '"kind": "engine"'))
    files["empty.engine"] = root / "empty.engine"
    files["empty.engine"].write_bytes(b"")
    files["model.xyz"] = root / "model.xyz"
    files["model.xyz"].write_text("?")
    files["empty-images"] = root / "empty-images"
    files["empty-images"].mkdir()
    files["four-classes"] = _dataset(root / "four-classes", label_value=3)
    (files["four-classes"] / "dataset.yaml").write_text("num_classes: 4\nignore_index: 255\n")
    files["labels-out-of-range"] = _dataset(root / "labels-out-of-range", label_value=9)
    (files["labels-out-of-range"] / "dataset.yaml").write_text("num_classes: 8\nignore_index: 255\n")
    files["unpaired"] = _dataset(root / "unpaired")
    (files["unpaired"] / "train" / "labels" / "im1.png").unlink()
    files["sixteen-bit"] = _dataset(root / "sixteen-bit", mode="I;16")
    # the class count is said, so that the refusal is about the images (nothing guesses it from the labels)
    (files["sixteen-bit"] / "dataset.yaml").write_text("num_classes: 2\nignore_index: 255\n")
    files["recipe"] = root / "recipe.yaml"
    files["recipe"].write_text("train:\n  epochs: 1\n  learning_rate: 0.1\n")
    return files


def _out(bad, name):
    return str(bad["root"] / name)


# (case id, argv with {placeholders} filled from the `bad` fixture, the words its sentence must contain (one
# string or several), the output file that must not appear)
CASES = [
    # checkpoints
    ("checkpoint: export a checkpoint that does not exist", ["export", "{root}/nope.pt", "--out", "{root}/o1.onnx"],
     "does not exist", "o1.onnx"),
    ("checkpoint: export an empty .pt", ["export", "{empty.pt}", "--out", "{root}/o2.onnx"], "is empty",
     "o2.onnx"),
    ("checkpoint: export a truncated .pt", ["export", "{truncated.pt}", "--out", "{root}/o3.onnx"], "truncated",
     "o3.onnx"),
    ("checkpoint: export a text file named .pt", ["export", "{text.pt}", "--out", "{root}/o4.onnx"],
     "not a readable", "o4.onnx"),
    ("checkpoint: prune an empty .pt", ["prune", "{empty.pt}", "--out", "{root}/p1.pt"], "is empty", "p1.pt"),
    ("checkpoint: distill from a truncated teacher",
     ["distill", "{truncated.pt}", "--data", "synthetic", "--out", "{root}/d1.pt", "--epochs", "1"], "truncated",
     "d1.pt"),
    ("checkpoint: info on a file that does not exist", ["info", "{root}/nothing.onnx"], "does not exist", None),
    # ONNX
    ("onnx: calibrate an ONNX that does not exist", ["calibrate", "{root}/nope.onnx", "--images", "{empty-images}"],
     "does not exist", None),
    ("onnx: calibrate an empty .onnx", ["calibrate", "{empty.onnx}", "--images", "{root}/four-classes/train/images"],
     ("is empty", "recreate"), "empty.int8.onnx"),
    ("onnx: calibrate a truncated .onnx",
     ["calibrate", "{truncated.onnx}", "--images", "{root}/four-classes/train/images"],
     ("not a readable ONNX model", "re-export"), "truncated.int8.onnx"),
    ("onnx: bench a text file named .onnx", ["bench", "{text.onnx}", "--iters", "1"], ("cannot load", "re-export"),
     None),
    ("onnx: bench a dynamic-size ONNX without a sidecar", ["bench", "{no-sidecar.onnx}", "--iters", "1"],
     "--input-size", None),
    ("onnx: build an engine from a truncated .onnx", ["build-engine", "{truncated.onnx}", "--out", "{root}/e1.onnx"],
     ("not a readable ONNX model", "re-export"), "e1.onnx"),
    ("onnx: calibrate on an empty image folder", ["calibrate", "{onnx}", "--images", "{empty-images}", "--out",
                                                  "{root}/c1.int8.onnx"],
     ("holds no images", "add some"), "c1.int8.onnx"),
    ("onnx: calibrate on a folder that does not exist",
     ["calibrate", "{onnx}", "--images", "{root}/no-such-images", "--out", "{root}/c2.int8.onnx"],
     ("does not exist", "folder of images"), "c2.int8.onnx"),
    # engines
    ("engine: bench an engine whose sha256 does not match its sidecar", ["bench", "{tampered.engine}"], "sha256",
     None),
    ("engine: bench an empty engine", ["bench", "{empty.engine}"], "is empty", None),
    ("engine: bench a file of an unknown type", ["bench", "{model.xyz}"], "unknown type", None),
    # data
    ("data: distill with a teacher of 8 classes on 4-class data",
     ["distill", "{student}", "--data", "{four-classes}", "--out", "{root}/d2.pt", "--epochs", "1"], "classes",
     "d2.pt"),
    ("data: eval an 8-class model on 4-class data", ["eval", "{onnx}", "--data", "{four-classes}"], "classes", None),
    ("data: train on labels outside the class range",
     ["train", "--arch", "mobilenetv3-small", "--data", "{labels-out-of-range}", "--out", "{root}/t1.pt",
      "--epochs", "1", "--batch-size", "2"], "outside classes", "t1.pt"),
    ("data: train with an image that has no label",
     ["train", "--arch", "mobilenetv3-small", "--data", "{unpaired}", "--out", "{root}/t2.pt", "--epochs", "1"],
     "no label", "t2.pt"),
    ("data: train on 16-bit images",
     ["train", "--arch", "mobilenetv3-small", "--data", "{sixteen-bit}", "--out", "{root}/t3.pt", "--epochs", "1"],
     "16/32-bit", "t3.pt"),
    ("data: train on a folder that does not exist",
     ["train", "--arch", "unet", "--data", "{root}/no-data", "--out", "{root}/t4.pt"],
     ("does not exist", "dataset folder"), "t4.pt"),
    ("data: eval on a folder without images", ["eval", "{onnx}", "--data", "{empty-images}"], "neither images", None),
    # input size
    ("input: train at an input size that is not HEIGHTxWIDTH",
     ["train", "--arch", "unet", "--data", "synthetic", "--input-size", "big", "--out", "{root}/t5.pt"],
     ("'big'", "HEIGHTxWIDTH"), "t5.pt"),
    ("input: export with an opset too old for the model", ["export", "{student}", "--opset", "11", "--out",
                                                           "{root}/o5.onnx"], "opset", "o5.onnx"),
    # output paths
    ("output: export into a folder that does not exist",
     ["export", "{student}", "--out", "{root}/missing-folder/m.onnx"], "does not exist", "missing-folder/m.onnx"),
    ("output: prune into a folder that cannot be written", ["prune", "{student}", "--out", "/proc/edgeseg-p.pt"],
     ("Cannot create files in /proc", "writable folder"), None),
    # contradictory options
    ("options: prune with fine-tuning but no data", ["prune", "{student}", "--finetune-epochs", "2", "--out",
                                                     "{root}/p2.pt"], "--data", "p2.pt"),
    ("options: prune more than everything", ["prune", "{student}", "--ratio", "1.5", "--out", "{root}/p3.pt"],
     "between 0 and 1", "p3.pt"),
    ("options: slimming with a magnitude ranking",
     ["prune", "{student}", "--sparsity-epochs", "1", "--data", "synthetic", "--out", "{root}/p4.pt"],
     "bn-scale", "p4.pt"),
    ("options: taylor importance without data", ["prune", "{student}", "--importance", "taylor", "--out",
                                                 "{root}/p5.pt"], "--data", "p5.pt"),
    ("options: latency target on TensorRT where there is none",
     ["prune", "{student}", "--target-latency-ms", "5", "--backend", "tensorrt", "--out", "{root}/p6.pt"],
     "TensorRT", "p6.pt"),
    ("options: calibrate with an accuracy budget but no data",
     ["calibrate", "{onnx}", "--images", "{root}/four-classes/train/images", "--max-miou-drop", "0.5", "--out",
      "{root}/c3.int8.onnx"], "--data", "c3.int8.onnx"),
    ("options: bench with zero iterations", ["bench", "{onnx}", "--iters", "0"], "--iters", None),
    ("options: build an engine with a profile whose batch sizes are out of order",
     ["build-engine", "{onnx}", "--shape", "4:2:1", "--out", "{root}/e2.onnx"], "MIN <= OPT <= MAX", "e2.onnx"),
    ("options: pin a layer precision without NAME=", ["build-engine", "{onnx}", "--layer-precision", "fp32",
                                                      "--out", "{root}/e3.onnx"], "NAME=PRECISION", "e3.onnx"),
    ("options: ask for TensorRT where there is none", ["build-engine", "{onnx}", "--backend", "tensorrt", "--out",
                                                       "{root}/e4.engine"], "TensorRT", "e4.engine"),
    ("options: distill with a loss that does not exist",
     ["distill", "{student}", "--data", "synthetic", "--loss", "magic", "--out", "{root}/d3.pt"],
     ("'magic'", "kl, cwd, feat"), "d3.pt"),
    ("options: train an architecture that does not exist",
     ["train", "--arch", "resnet1000", "--data", "synthetic", "--out", "{root}/t6.pt"], "Unknown architecture",
     "t6.pt"),
    ("options: a recipe with a key no option has",
     ["train", "--recipe", "{recipe}", "--arch", "unet", "--data", "synthetic", "--out", "{root}/t7.pt"],
     "learning_rate", "t7.pt"),
]


@pytest.mark.parametrize("case,argv,says,output", CASES, ids=[c[0] for c in CASES])
def test_user_mistake(case, argv, says, output, bad):
    result = CliRunner().invoke(cli, fill(argv, bad))
    text = result.output.strip()
    assert result.exit_code != 0, f"{case}: exit code 0\n{text}"
    assert "Traceback" not in text and not isinstance(result.exception, (AttributeError, TypeError, KeyError)), \
        f"{case}: crashed instead of explaining\n{text}\n{result.exception!r}"
    last = text.splitlines()[-1] if text else ""
    assert last.startswith("Error:") and len(last) > 20, f"{case}: no one-sentence error\n{text}"
    words = (says,) if isinstance(says, str) else says
    assert words and all(words), f"{case}: names no words its sentence must contain"
    missing = [word for word in words if word not in last]
    assert not missing, f"{case}: the sentence does not mention {missing}\n{last}"
    if output:
        target = Path(_out(bad, output))
        assert not target.exists(), f"{case}: left {target} behind"
        assert not list(target.parent.glob(f".tmp-{target.name}-*")), f"{case}: left a temporary file"


@pytest.mark.parametrize("mode", ["L", "RGBA"], ids=["data: train on grayscale images (read as RGB)",
                                                     "data: train on RGBA images (alpha dropped)"])
def test_grayscale_and_rgba_images_are_not_mistakes(mode, tmp_path):
    """Not every odd image is an error: one channel or an alpha channel is converted, as a user expects."""
    data = _dataset(tmp_path / "data", mode=mode)
    (data / "dataset.yaml").write_text("num_classes: 2\nignore_index: 255\n")
    with Image.open(data / "train" / "images" / "im0.png") as image:
        assert image.mode == mode  # the case really feeds that kind of image
    out = tmp_path / "t.pt"
    result = CliRunner().invoke(cli, ["train", "--arch", "unet", "--arch-arg", "base_channels=4", "--data", str(data),
                                      "--epochs", "1", "--batch-size", "2", "--out", str(out), "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
