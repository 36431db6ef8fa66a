"""Shared fixtures: a tiny synthetic dataset and tiny artifacts, built once per test session.

Everything is 64x64 with a handful of images so the whole suite stays fast on 2 cores.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep generated datasets out of the user's home cache."""
    cache = tmp_path_factory.mktemp("cache")
    # TORCH_HOME too: ImageNet weights in the user's torchvision cache would change how models start
    old = {name: os.environ.get(name) for name in ("EDGESEG_CACHE", "TORCH_HOME")}
    os.environ["EDGESEG_CACHE"] = str(cache)
    os.environ["TORCH_HOME"] = str(cache / "torch")
    yield cache
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset

    return write_dataset(tmp_path_factory.mktemp("data") / "synthetic",
                         SyntheticConfig(seed=3, num_train=8, num_val=4, height=64, width=64))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_data, artifacts) -> Path:
    from edgeseg.training.api import train

    path = artifacts / "teacher.pt"
    train("unet", str(tiny_data), str(path), epochs=1, batch_size=4,
          arch_args={"base_channels": 8, "encoder_depth": 3})
    return path


@pytest.fixture(scope="session")
def tiny_student(tiny_teacher, tiny_data, artifacts) -> Path:
    from edgeseg.distillation.api import distill

    path = artifacts / "student.pt"
    distill(str(tiny_teacher), str(tiny_data), str(path), student="mobilenetv3-small", epochs=1, batch_size=4)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_student, tiny_data, artifacts) -> Path:
    from edgeseg.exporting.api import export

    path = artifacts / "student.onnx"
    export(str(tiny_student), str(path), data=str(tiny_data))
    return path


@pytest.fixture(scope="session")
def tiny_int8(tiny_onnx, tiny_data) -> Path:
    from edgeseg.quant.api import calibrate

    calibrate(str(tiny_onnx), str(tiny_data / "train" / "images"), num=8)
    return tiny_onnx.with_name("student.int8.onnx")


@pytest.fixture
def calibrated(tiny_int8, tmp_path) -> Path:
    """A private copy of the tiny model and everything calibrate wrote beside it (the TensorRT tests build from it)."""
    import shutil

    for path in tiny_int8.parent.glob("student.*"):
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_class_map_onnx(tiny_student, tiny_data, artifacts) -> Path:
    """The tiny student exported with --argmax: it outputs its uint8 class map instead of logits."""
    from edgeseg.exporting.api import export

    path = artifacts / "student.classes.onnx"
    export(str(tiny_student), str(path), data=str(tiny_data), argmax=True)
    return path


def require_camvid() -> Path:
    if not (CAMVID / "val" / "images").is_dir():
        pytest.skip(f"CamVid is not at {CAMVID} (it lives in ../shared/data beside the repository)")
    return CAMVID
