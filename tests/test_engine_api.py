"""build-engine's own decisions (edgeseg/engine/api.py), on a hand-made ONNX calibrated once: no training.

Which file TensorRT or ONNX Runtime is handed, under which name the artifact is written, what
its sidecar says, which refusals come first and in which words, and what reaches TensorRT
(through Polygraphy's real code and tests/trt_double.py). Fast (a few seconds), so `make mutate
MODULE=edgeseg/engine/api.py TESTS=tests/test_engine_api.py` runs it for every mutant.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgeseg.engine import api
from edgeseg.engine.api import build_engine
from edgeseg.errors import ConfigError
from tests import trt_double
from tests.test_engine_content import tiny_model

SPEC = dict(height=8, width=12, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _write_student(folder: Path, batch="n") -> Path:
    from edgeseg.sidecar import write_sidecar
    from edgeseg.spec import DatasetInfo, InputSpec

    path = tiny_model(folder, batch=batch).rename(folder / "student.onnx")
    write_sidecar(path, "onnx", input_spec=InputSpec(**SPEC),
                  dataset=DatasetInfo(num_classes=2, ignore_index=255, classes=("road", "car")),
                  model={"arch": "hand-made", "num_classes": 2}, onnx={"input": "input", "output": "logits"})
    return path


@pytest.fixture(scope="module")
def calibrated_once(tmp_path_factory) -> Path:
    """student.onnx and what calibrate writes next to it: .int8.onnx, .calib.cache, .calib.onnx."""
    from PIL import Image

    from edgeseg.quant.api import calibrate

    folder = tmp_path_factory.mktemp("calibrated")
    student = _write_student(folder)
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    calibrate(str(student), str(images), num=4)
    return folder


@pytest.fixture
def folder(calibrated_once, tmp_path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(calibrated_once, copy)
    return copy


def sidecar(path: Path) -> dict:
    return json.loads(Path(str(path) + ".json").read_text())


def edit_sidecar(path: Path, **changes) -> None:
    meta = sidecar(path)
    meta.update(changes)
    Path(str(path) + ".json").write_text(json.dumps(meta))


# --- parsing the options ------------------------------------------------------------------------------------

def test_batch_shape_defaults_to_one_to_max_batch_and_reads_min_opt_max():
    assert api.parse_batch_shape(None, 8) == (1, 1, 8)
    assert api.parse_batch_shape("", 3) == (1, 1, 3)
    assert api.parse_batch_shape("1:4:8", 99) == (1, 4, 8)
    assert api.parse_batch_shape("2:2:2", 8) == (2, 2, 2)
    assert api.parse_batch_shape("1:1:1", 8) == (1, 1, 1)


@pytest.mark.parametrize("shape, sentence", [
    ("1:4", "--shape '1:4' is not MIN:OPT:MAX batch sizes, e.g. 1:4:8."),
    ("a:b:c", "--shape 'a:b:c' is not MIN:OPT:MAX batch sizes, e.g. 1:4:8."),
    ("0:1:1", "--shape 0:1:1: the batch sizes must satisfy 1 <= MIN <= OPT <= MAX."),
    ("2:1:4", "--shape 2:1:4: the batch sizes must satisfy 1 <= MIN <= OPT <= MAX."),
    ("1:5:4", "--shape 1:5:4: the batch sizes must satisfy 1 <= MIN <= OPT <= MAX."),
])
def test_a_bad_batch_shape_is_one_exact_sentence(shape, sentence):
    with pytest.raises(ConfigError) as caught:
        api.parse_batch_shape(shape, 8)
    assert str(caught.value) == sentence


def test_layer_precisions_split_at_the_last_equals_sign_and_lower_the_precision():
    assert api.parse_layer_precisions(["/head/Conv=FP32", "a=b=fp16"]) == {"/head/Conv": "fp32", "a=b": "fp16"}
    assert api.parse_layer_precisions([]) == {}
    for item in ("=fp32", "nothing"):
        with pytest.raises(ConfigError) as caught:
            api.parse_layer_precisions([item])
        assert str(caught.value) == f"--layer-precision '{item}' is not NAME=PRECISION, e.g. /head/Conv=fp32."


def test_the_rebuild_command_names_every_option_that_shaped_the_engine():
    def command(**options):
        defaults = dict(int8=False, fp16=False, shape=None, dla_core=None, layer_precisions={},
                        version_compatible=False)
        defaults.update(options)
        return api._rebuild_command(Path("/x/m.onnx"), **defaults)

    assert command() == "edgeseg build-engine m.onnx"
    assert command(int8=True, fp16=True, shape="1:2:4", dla_core=0, layer_precisions={"/a": "fp32", "/b": "fp16"},
                   version_compatible=True, int8_source="cache") == (
        "edgeseg build-engine m.onnx --int8 --fp16 --int8-source cache --shape 1:2:4 --dla-core 0 "
        "--layer-precision /a=fp32 --layer-precision /b=fp16 --version-compatible")
    assert command(int8=True, int8_source="auto") == "edgeseg build-engine m.onnx --int8"
    assert command(int8=False, int8_source="cache") == "edgeseg build-engine m.onnx"  # no INT8: no source


def test_strip_removes_only_a_trailing_suffix():
    assert api._strip("a.int8.onnx", ".onnx") == "a.int8"
    assert api._strip("a.onnx.x", ".onnx") == "a.onnx.x"


def test_onnx_fixed_batch_reads_the_first_input_dimension(tmp_path):
    assert api.onnx_fixed_batch(tiny_model(tmp_path)) is None
    assert api.onnx_fixed_batch(tiny_model(tmp_path, batch=3)) == 3
    assert api.onnx_fixed_batch(tiny_model(tmp_path, batch=1)) == 1


# --- TensorRT found or not ----------------------------------------------------------------------------------

def only_tensorrt_is_found(found: bool):
    """find_spec that finds the package named tensorrt (and nothing else) when ``found``."""
    return lambda name: object() if found and name == "tensorrt" else None


def test_tensorrt_available_says_why_not(monkeypatch):
    monkeypatch.setattr(api.importlib.util, "find_spec", only_tensorrt_is_found(False))
    assert api.tensorrt_available() == (False, "the tensorrt Python package is not installed")


def test_tensorrt_available_with_tensorrt_names_its_version(monkeypatch):
    trt = trt_double.install(monkeypatch, "10.3.0")
    monkeypatch.setattr(api.importlib.util, "find_spec", only_tensorrt_is_found(True))
    assert api.tensorrt_available() == (True, trt.__version__)


def _fake_tensorrt(monkeypatch, builder):
    class Logger:
        ERROR = "error-level"

        def __init__(self, level):
            assert level == "error-level"  # TensorRT's own chatter below errors stays out of the terminal
            self.level = level

    def checked_builder(logger):
        assert isinstance(logger, Logger)
        return builder(logger)

    fake = types.SimpleNamespace(Builder=checked_builder, Logger=Logger, __version__="10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(api.importlib.util, "find_spec", only_tensorrt_is_found(True))


def test_tensorrt_without_a_cuda_device_or_broken_says_so(monkeypatch):
    _fake_tensorrt(monkeypatch, lambda logger: None)
    assert api.tensorrt_available() == (False, "TensorRT found no CUDA device")

    def broken(logger):
        raise RuntimeError("libcudart.so.12: cannot open shared object file")

    _fake_tensorrt(monkeypatch, broken)
    assert api.tensorrt_available() == (
        False, "TensorRT is installed but unusable (libcudart.so.12: cannot open shared object file)")


# --- ONNX Runtime: the artifact, its name and its sidecar ------------------------------------------------------

@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setattr(api, "tensorrt_available", lambda: (False, "the tensorrt Python package is not installed"))


def test_without_tensorrt_fp32_is_an_onnxruntime_artifact_named_after_its_precision(folder, no_tensorrt):
    meta = build_engine(str(folder / "student.onnx"))
    out = folder / "student.fp32.ort.onnx"
    assert out.exists() and sidecar(out) == meta
    assert meta["kind"] == "onnx" and meta["precision"] == "fp32" and meta["stage"] == "build-engine"
    assert meta["engine"]["backend"] == "onnxruntime" and meta["parent"]["artifact"] == "student.onnx"
    assert meta["input"]["height"] == 8 and meta["dataset"]["classes"] == ["road", "car"]
    assert meta["model"] == {"arch": "hand-made", "num_classes": 2} and meta["onnx"]["output"] == "logits"


def test_int8_without_tensorrt_takes_the_qdq_model_calibrate_wrote(folder, no_tensorrt, capsys):
    meta = build_engine(str(folder / "student.onnx"), int8=True)
    out = folder / "student.int8.ort.onnx"
    assert out.exists() and meta["precision"] == "int8"
    assert meta["parent"]["artifact"] == "student.int8.onnx"
    assert meta["parent"]["sha256"] == sidecar(folder / "student.int8.onnx")["sha256"]
    assert meta["quantization"] == sidecar(folder / "student.int8.onnx")["quantization"]
    said = " ".join(capsys.readouterr().err.split())
    assert "Using student.int8.onnx, the Q/DQ model edgeseg calibrate wrote next to student.onnx" in said
    assert "Backend: ONNX Runtime (CPU), because the tensorrt Python package is not installed" in said


def test_the_qdq_model_itself_is_int8_and_fp16_stays_fp32_on_onnxruntime(folder, no_tensorrt, capsys):
    assert build_engine(str(folder / "student.int8.onnx"))["precision"] == "int8"
    assert (folder / "student.int8.ort.onnx").exists()
    meta = build_engine(str(folder / "student.onnx"), fp16=True)
    assert meta["precision"] == "fp32" and meta["artifact"] == "student.fp16.ort.onnx"
    said = " ".join(capsys.readouterr().err.split())
    assert "--fp16 has no effect on ONNX Runtime's CPU provider; the artifact stays FP32" in said


def test_an_engine_name_becomes_an_onnxruntime_name(folder, no_tensorrt):
    for name, written in (("a.engine", "a.ort.onnx"), ("b.plan", "b.ort.onnx"), ("c.trt", "c.ort.onnx"),
                          ("d.onnx", "d.onnx")):
        meta = build_engine(str(folder / "student.onnx"), str(folder / name))
        assert (folder / written).exists() and meta["artifact"] == written, name
    assert not [p.name for p in folder.iterdir() if p.suffix in (".engine", ".plan", ".trt")]


def test_tensorrt_only_options_are_said_to_be_ignored_on_onnxruntime(folder, no_tensorrt, capsys):
    build_engine(str(folder / "student.onnx"), shape="1:2:4")
    said = " ".join(capsys.readouterr().err.split())
    assert "--dla-core, --layer-precision and --shape apply to TensorRT engines only; ignored for ONNX Runtime" in said
    build_engine(str(folder / "student.onnx"), str(folder / "b.onnx"))
    assert "apply to TensorRT engines only" not in capsys.readouterr().err


def test_asking_for_onnxruntime_says_it_was_asked(folder, monkeypatch, capsys):
    trt_double.install(monkeypatch, "10.3.0")
    monkeypatch.setattr(api, "tensorrt_available", lambda: (True, "10.3.0"))
    meta = build_engine(str(folder / "student.onnx"), backend="onnxruntime")
    assert meta["engine"]["backend"] == "onnxruntime"
    assert "because --backend onnxruntime was asked for" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("options, sentence", [
    (dict(backend="tvm"), "Unknown --backend 'tvm'; choose auto, tensorrt or onnxruntime."),
    (dict(backend="tensorrt"), "--backend tensorrt was asked for but the tensorrt Python package is not installed; "
                               "install TensorRT or use --backend onnxruntime."),
])
def test_refusals_before_any_work_are_one_sentence(folder, no_tensorrt, options, sentence):
    with pytest.raises(ConfigError) as caught:
        build_engine(str(folder / "student.onnx"), **options)
    assert str(caught.value) == sentence
    assert not list(folder.glob("*.ort.onnx")) and not list(folder.glob("*.engine"))


def test_int8_without_calibration_is_refused_naming_the_command(folder, no_tensorrt):
    (folder / "student.int8.onnx").unlink()
    with pytest.raises(ConfigError) as caught:
        build_engine(str(folder / "student.onnx"), int8=True)
    assert str(caught.value) == "--int8 needs a calibrated model; run edgeseg calibrate student.onnx first."


def test_a_fixed_batch_refuses_another_shape(tmp_path, no_tensorrt):
    model = _write_student(tmp_path, batch=2)
    with pytest.raises(ConfigError) as caught:
        build_engine(str(model), shape="1:2:4")
    assert str(caught.value) == ("student.onnx has a fixed batch of 2; drop --shape or export the model with a "
                                 "dynamic batch (edgeseg export does).")
    build_engine(str(model), shape="2:2:2")  # the fixed batch itself is fine


# --- TensorRT (the double, through Polygraphy): what it was asked ----------------------------------------------

def with_tensorrt(monkeypatch, version, tmp_home):
    trt = trt_double.install(monkeypatch, version)
    monkeypatch.setattr(api, "tensorrt_available", lambda: (True, version))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_home))
    return trt


def test_fp16_on_tensorrt_10_is_an_engine_with_fp16_and_the_batch_profile(folder, monkeypatch, tmp_path):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), fp16=True, shape="1:2:4", timing_cache="none")
    engine = folder / "student.fp16.engine"
    record = trt.engine_record(engine)
    assert "FP16" in record["flags"] and "INT8" not in record["flags"]
    assert record["profiles"] == [{"input": [[1, 3, 8, 12], [2, 3, 8, 12], [4, 3, 8, 12]]}]
    assert record["workspace"] == 2048 * 1024 * 1024 and record["calibration"] is None
    assert meta["kind"] == "engine" and meta["precision"] == "fp16" and meta["engine"]["backend"] == "tensorrt"
    assert meta["engine"]["rebuild"] == "edgeseg build-engine student.onnx --fp16 --shape 1:2:4"
    assert meta["engine"]["int8"] is None and meta["engine"]["timing_cache"] is None
    assert meta["parent"]["artifact"] == "student.onnx" and sidecar(engine) == meta


def test_max_batch_and_workspace_reach_tensorrt(folder, monkeypatch, tmp_path):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    build_engine(str(folder / "student.onnx"), str(folder / "m.engine"), max_batch=3, workspace_mb=64,
                 timing_cache="none")
    record = trt.engine_record(folder / "m.engine")
    assert record["profiles"] == [{"input": [[1, 3, 8, 12], [1, 3, 8, 12], [3, 3, 8, 12]]}]
    assert record["workspace"] == 64 * 1024 * 1024 and "FP16" not in record["flags"]


def test_a_fixed_batch_is_the_whole_profile(tmp_path, monkeypatch):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    model = _write_student(tmp_path, batch=2)
    build_engine(str(model), timing_cache="none")
    assert trt.engine_record(tmp_path / "student.fp32.engine")["profiles"] == [
        {"input": [[2, 3, 8, 12], [2, 3, 8, 12], [2, 3, 8, 12]]}]


def test_int8_on_tensorrt_10_builds_the_qdq_model_with_the_int8_flag(folder, monkeypatch, tmp_path):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), int8=True, timing_cache="none")
    record = trt.engine_record(folder / "student.int8.engine")
    assert "INT8" in record["flags"] and record["calibration"] is None and record["pinned"] == {}
    assert meta["parent"]["artifact"] == "student.int8.onnx" and meta["precision"] == "int8"
    assert meta["engine"]["int8"] == {
        "source": "qdq", "onnx": "student.int8.onnx", "quantized_by": "calibrate",
        "accuracy": "as measured by edgeseg calibrate on the Q/DQ model (bias-corrected, logits in float)"}
    assert meta["engine"]["rebuild"] == "edgeseg build-engine student.onnx --int8"


def test_implicit_int8_from_the_cache_pins_calibrates_float_layers(folder, monkeypatch, tmp_path, capsys):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), int8=True, int8_source="cache", timing_cache="none")
    float_layers = sidecar(folder / "student.calib.onnx")["quantization"]["float_layers"]
    assert float_layers  # the classifier
    record = trt.engine_record(folder / "student.int8.engine")
    assert "INT8" in record["flags"] and record["calibration"] is not None
    # the float layers reach TensorRT as FP32 pins it must obey
    assert set(float_layers) <= set(record["pinned"]) and all(record["pinned"][n] == "FLOAT" for n in float_layers)
    assert "OBEY_PRECISION_CONSTRAINTS" in record["flags"]
    assert meta["engine"]["float_layers"] == float_layers
    assert meta["engine"]["int8"] == {
        "source": "calibration cache", "onnx": "student.calib.onnx", "bias_corrected": True,
        "quantized_by": "calibrate",
        "accuracy": ("TensorRT's implicit INT8 with calibrate's ranges; not measured by edgeseg: TensorRT chooses "
                     "the INT8 layers itself, so check it with edgeseg eval on this engine")}
    assert meta["engine"]["rebuild"] == "edgeseg build-engine student.onnx --int8 --int8-source cache"
    said = " ".join(capsys.readouterr().err.split())
    assert (f"Implicit INT8 from student.calib.cache on student.calib.onnx (bias-corrected, {len(float_layers)} "
            f"layer(s) pinned to FP32)") in said


def test_implicit_int8_without_the_twin_uses_the_fp32_graph_and_says_what_is_lost(folder, capsys):
    (folder / "student.calib.onnx").unlink()
    edit_sidecar(folder / "student.int8.onnx", quantization={"fallback_layers": ["/enc/Conv"]})
    source, layers = api.implicit_int8_source(folder / "student.onnx", "student")
    assert source == folder / "student.onnx" and layers == ["/enc/Conv"]
    said = " ".join(capsys.readouterr().err.split())
    assert ("Implicit INT8 from student.calib.cache on student.onnx: no bias correction and an INT8 classifier "
            "(rerun edgeseg calibrate to get student.calib.onnx)") in said
    assert api._int8_record(True, False, folder / "student.onnx")["bias_corrected"] is False
    assert api._int8_record(False, False, folder / "student.onnx") is None


def test_tensorrt_refuses_an_asymmetric_qdq_model_before_building(folder, monkeypatch, tmp_path):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    quantization = dict(sidecar(folder / "student.int8.onnx")["quantization"], symmetric=False)
    edit_sidecar(folder / "student.int8.onnx", quantization=quantization)
    with pytest.raises(ConfigError) as caught:
        build_engine(str(folder / "student.int8.onnx"), timing_cache="none")
    assert str(caught.value) == (
        "student.int8.onnx was calibrated with --asymmetric, which TensorRT's ONNX parser rejects (it takes symmetric "
        "INT8 only); recalibrate without --asymmetric, or use --int8-source cache on TensorRT 8.5-10.x.")
    assert not list(folder.glob("*.engine"))
    api.require_symmetric({"quantization": {"symmetric": True}}, "x")
    api.require_symmetric({}, "x")


@pytest.mark.parametrize("version, refused", [("8.5.2", True), ("9.9.9", True), ("10.0.1", False)])
def test_a_uint8_class_map_is_refused_below_tensorrt_10(version, refused):
    meta = {"onnx": {"output_kind": "class_map", "output_dtype": "uint8"}}
    if refused:
        with pytest.raises(ConfigError) as caught:
            api.require_class_map_type(meta, "m.onnx", version)
        assert str(caught.value) == (
            f"m.onnx outputs a uint8 class map, which TensorRT {version} cannot produce (its ArgMax is a TopK with "
            f"int32 indices); re-export it with edgeseg export --argmax --argmax-dtype int32.")
    else:
        api.require_class_map_type(meta, "m.onnx", version)
    api.require_class_map_type({"onnx": {"output_kind": "class_map", "output_dtype": "int32"}}, "m.onnx", "8.5.2")
    api.require_class_map_type({"onnx": {"output_kind": "logits", "output_dtype": "uint8"}}, "m.onnx", "8.5.2")


def test_build_engine_checks_the_class_map_type_against_the_installed_tensorrt(folder, monkeypatch, tmp_path):
    with_tensorrt(monkeypatch, "8.5.2", tmp_path / "home")
    edit_sidecar(folder / "student.onnx", onnx={"input": "input", "output": "logits", "output_kind": "class_map",
                                                "output_dtype": "uint8"})
    with pytest.raises(ConfigError, match="^student.onnx outputs a uint8 class map, which TensorRT 8.5.2 cannot"):
        build_engine(str(folder / "student.onnx"), timing_cache="none")


def test_the_default_timing_cache_is_written_under_the_users_cache_folder(folder, monkeypatch, tmp_path):
    with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), fp16=True)
    cache = Path(meta["engine"]["timing_cache"]["path"])
    assert cache.exists() and str(cache).startswith(str(tmp_path / "home"))
    given = folder / "given.cache"
    assert build_engine(str(folder / "student.onnx"), fp16=True, timing_cache=str(given))["engine"][
        "timing_cache"]["path"] == str(given) and given.exists()


def test_tensorrt_11_fp16_is_built_from_an_fp16_onnx(folder, monkeypatch, tmp_path, capsys):
    import onnx

    trt = with_tensorrt(monkeypatch, "11.4.0", tmp_path / "home")
    build_engine(str(folder / "student.onnx"), fp16=True, timing_cache="none")
    fp16 = folder / "student.fp16.onnx"
    weights = {t.name: t.data_type for t in onnx.load(str(fp16)).graph.initializer}
    assert weights["w1"] == onnx.TensorProto.FLOAT16
    assert onnx.load(str(fp16)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert trt.engine_record(folder / "student.fp16.engine")["strongly_typed"] is True
    assert "Wrote student.fp16.onnx (FP16 weights and compute, FP32 input/output)" in " ".join(
        capsys.readouterr().err.split())
    build_engine(str(folder / "student.onnx"), str(folder / "io.engine"), fp16=True, fp16_io=True,
                 timing_cache="none")
    assert onnx.load(str(fp16)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


# --- --print-trtexec: the line for the device --------------------------------------------------------------------

def test_print_trtexec_for_jetpack_6_int8_names_the_qdq_model(folder, capsys, no_tensorrt):
    result = build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True, shape="1:2:4")
    assert result["tensorrt"] == "10.3.0"
    words = shlex.split(result["trtexec"])
    assert words[1:5] == ["--onnx=student.int8.onnx", "--saveEngine=student.int8.engine",
                          "--minShapes=input:1x3x8x12", "--optShapes=input:2x3x8x12"]
    assert "--int8" in words and "--calib" not in " ".join(words)
    out = capsys.readouterr().out
    assert result["trtexec"] in out
    assert not list(folder.glob("*.engine")) and not list(folder.glob("*.ort.onnx"))  # nothing was built


def test_print_trtexec_for_jetpack_5_heads_the_cache_for_that_tensorrt(folder, no_tensorrt):
    result = build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True, trt_version="8.5.2")
    words = shlex.split(result["trtexec"])
    assert "--onnx=student.calib.onnx" in words and "--calib=student.calib.trt8502.cache" in words
    headed = (folder / "student.calib.trt8502.cache").read_text()
    assert headed.startswith("TRT-8502-")
    assert headed.split("\n", 1)[1] == (folder / "student.calib.cache").read_text().split("\n", 1)[1]
    float_layers = sidecar(folder / "student.calib.onnx")["quantization"]["float_layers"]
    pins = ",".join(f"{name}:fp32" for name in float_layers)
    assert f"--layerPrecisions={pins}" in words and "--precisionConstraints=obey" in words


def test_print_trtexec_refuses_an_incomplete_version_and_an_uncalibrated_int8(folder, no_tensorrt):
    with pytest.raises(ConfigError) as caught:
        build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True, trt_version="8.5")
    assert str(caught.value) == (
        "--trt-version 8.5: give major.minor.patch (e.g. 8.5.2 on JetPack 5.1, 10.3.0 on JetPack 6); the "
        "calibration cache's header must name the exact version.")
    (folder / "student.int8.onnx").unlink()
    with pytest.raises(ConfigError) as caught:
        build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True, trt_version="10.3.0")
    assert str(caught.value) == "--int8 needs a calibrated model; run edgeseg calibrate student.onnx first."


def test_print_trtexec_refuses_an_asymmetric_model_for_tensorrt(folder, no_tensorrt):
    quantization = dict(sidecar(folder / "student.int8.onnx")["quantization"], symmetric=False)
    edit_sidecar(folder / "student.int8.onnx", quantization=quantization)
    for model, options in (("student.onnx", dict(int8=True)), ("student.int8.onnx", {})):
        with pytest.raises(ConfigError, match="was calibrated with --asymmetric"):
            build_engine(str(folder / model), print_trtexec=True, trt_version="10.3.0", **options)


def test_print_trtexec_with_fp16_on_tensorrt_11_names_the_fp16_onnx(folder, no_tensorrt):
    result = build_engine(str(folder / "student.onnx"), fp16=True, print_trtexec=True, trt_version="11.4.0",
                          timing_cache=str(folder / "t.cache"))
    words = shlex.split(result["trtexec"])
    assert "--onnx=student.fp16.onnx" in words and "--saveEngine=student.fp16.engine" in words
    assert "--timingCacheFile=t.cache" in words
    default_cache = build_engine(str(folder / "student.onnx"), fp16=True, print_trtexec=True, trt_version="10.3.0")
    assert "--timingCacheFile" not in default_cache["trtexec"]


# --- more of what reaches TensorRT, and the sidecars build-engine needs -------------------------------------------

def test_a_model_without_its_sidecar_is_refused(folder, no_tensorrt):
    from edgeseg.errors import EdgesegError

    Path(str(folder / "student.onnx") + ".json").unlink()
    with pytest.raises(EdgesegError, match="student.onnx.json"):
        build_engine(str(folder / "student.onnx"))
    assert not list(folder.glob("*.ort.onnx"))


def test_a_qdq_model_without_its_sidecar_is_refused(folder, no_tensorrt):
    from edgeseg.errors import EdgesegError

    Path(str(folder / "student.int8.onnx") + ".json").unlink()
    with pytest.raises(EdgesegError, match="student.int8.onnx.json"):
        build_engine(str(folder / "student.onnx"), int8=True)


def test_the_twin_without_its_sidecar_is_refused(folder):
    from edgeseg.errors import EdgesegError

    Path(str(folder / "student.calib.onnx") + ".json").unlink()
    with pytest.raises(EdgesegError, match="student.calib.onnx.json"):
        api.implicit_int8_source(folder / "student.onnx", "student")


def test_the_default_profile_goes_to_batch_8_and_the_default_source_is_auto(folder, monkeypatch, tmp_path, capsys):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), timing_cache="none")
    assert trt.engine_record(folder / "student.fp32.engine")["profiles"] == [
        {"input": [[1, 3, 8, 12], [1, 3, 8, 12], [8, 3, 8, 12]]}]
    assert meta["precision"] == "fp32" and "FP16" not in trt.engine_record(folder / "student.fp32.engine")["flags"]
    said = "".join(capsys.readouterr().err.split())  # rich wraps long paths anywhere
    assert "Backend:TensorRT10.3.0(foundwithaCUDAdevice)" in said
    assert f"Wrote{folder / 'student.fp32.engine'}" in said
    assert api._rebuild_command(Path("m.onnx"), int8=True, fp16=False, shape=None, dla_core=None,
                                layer_precisions={}, version_compatible=False) == "edgeseg build-engine m.onnx --int8"


def test_a_model_named_fp32_gives_its_base_name(tmp_path, no_tensorrt):
    model = _write_student(tmp_path)
    named = model.rename(tmp_path / "net.fp32.onnx")
    Path(str(model) + ".json").rename(Path(str(named) + ".json"))
    assert build_engine(str(named))["artifact"] == "net.fp32.ort.onnx"


def test_fp16_on_a_qdq_model_without_tensorrt_stays_int8(folder, no_tensorrt):
    meta = build_engine(str(folder / "student.int8.onnx"), str(folder / "q.onnx"), fp16=True)
    assert meta["precision"] == "int8"


def test_dla_layer_pins_and_version_compatibility_reach_tensorrt(folder, monkeypatch, tmp_path, capsys):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), str(folder / "d.engine"), int8=True, dla_core=1,
                        layer_precision=["/up/Resize=fp16"], timing_cache="none")
    record = trt.engine_record(folder / "d.engine")
    assert record["dla_core"] == 1
    assert record["profiles"] == [{"input": [[1, 3, 8, 12], [1, 3, 8, 12], [1, 3, 8, 12]]}]  # the DLA's static batch
    # INT8 on the DLA of TensorRT 10 is implicit, from the cache: calibrate's float classifier is pinned beside the
    # user's pin, on both layers the double's parser makes of each node
    assert meta["engine"]["int8"]["source"] == "calibration cache"
    assert meta["engine"]["layer_precisions"] == {"/head/Conv": "fp32", "/up/Resize": "fp16"}
    assert record["pinned"]["/up/Resize"] == "HALF" and record["pinned"]["/head/Conv"] == "FLOAT"
    assert "OBEY_PRECISION_CONSTRAINTS" in record["flags"]
    assert meta["engine"]["rebuild"] == ("edgeseg build-engine student.onnx --int8 --dla-core 1 "
                                         "--layer-precision /up/Resize=fp16")
    compatible = build_engine(str(folder / "student.onnx"), str(folder / "v.engine"), fp16=True,
                              version_compatible=True, timing_cache="none")
    assert trt.engine_record(folder / "v.engine")["version_compatible"] is True
    assert compatible["engine"]["plan"]["version_compatible"] is True
    assert compatible["engine"]["rebuild"] == "edgeseg build-engine student.onnx --fp16 --version-compatible"
    assert "--dla-core, --layer-precision" not in capsys.readouterr().err


def test_implicit_int8_on_the_dla_of_8_5_reads_the_cache(folder, monkeypatch, tmp_path):
    trt = with_tensorrt(monkeypatch, "8.5.2", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), str(folder / "c.engine"), int8=True, timing_cache="none")
    assert meta["engine"]["int8"]["source"] == "calibration cache"
    assert trt.engine_record(folder / "c.engine")["calibration"] is not None
    qdq = build_engine(str(folder / "student.int8.onnx"), str(folder / "q.engine"), timing_cache="none")
    assert qdq["engine"]["int8"]["source"] == "qdq"
    assert trt.engine_record(folder / "q.engine")["calibration"] is None


def test_print_trtexec_carries_every_option_to_the_line(folder, no_tensorrt):
    result = build_engine(str(folder / "student.onnx"), "my.engine", int8=True, print_trtexec=True,
                          trt_version="10.3.0", dla_core=1, layer_precision=["/up/Resize=fp16"], workspace_mb=64,
                          version_compatible=True)
    words = shlex.split(result["trtexec"])
    assert "--saveEngine=my.engine" in words and "--memPoolSize=workspace:64" in words
    assert "--useDLACore=1" in words and "--layerPrecisions=/head/Conv:fp32,/up/Resize:fp16" in words
    assert "--versionCompatible" in words and "--calib=student.calib.trt100300.cache" in words
    assert "--maxShapes=input:1x3x8x12" in words  # the DLA's static batch
    default = shlex.split(build_engine(str(folder / "student.onnx"), fp16=True, print_trtexec=True,
                                       trt_version="10.3.0")["trtexec"])
    assert "--saveEngine=student.fp16.engine" in default and "--memPoolSize=workspace:2048" in default
    assert "--maxShapes=input:8x3x8x12" in default and "--fp16" in default
    assert "--useDLACore=1" not in default and "--versionCompatible" not in default
    plain = shlex.split(build_engine(str(folder / "student.onnx"), print_trtexec=True, trt_version="10.3.0",
                                     timing_cache="none")["trtexec"])
    assert "--saveEngine=student.fp32.engine" in plain and "--fp16" not in plain and "--int8" not in plain


def test_print_trtexec_for_a_fixed_batch_model_sets_no_shapes(tmp_path, no_tensorrt):
    model = _write_student(tmp_path, batch=1)
    words = shlex.split(build_engine(str(model), print_trtexec=True, trt_version="10.3.0")["trtexec"])
    assert not [w for w in words if w.startswith(("--minShapes", "--optShapes", "--maxShapes"))]


def test_print_trtexec_checks_the_qdq_model_given_and_the_class_map_for_that_version(folder, no_tensorrt):
    quantization = dict(sidecar(folder / "student.int8.onnx")["quantization"], symmetric=False)
    edit_sidecar(folder / "student.int8.onnx", quantization=quantization)
    with pytest.raises(ConfigError, match="^student.int8.onnx was calibrated with --asymmetric"):
        build_engine(str(folder / "student.int8.onnx"), print_trtexec=True, trt_version="10.3.0")
    with pytest.raises(ConfigError, match="^student.int8.onnx was calibrated with --asymmetric"):
        build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True, trt_version="10.3.0")
    edit_sidecar(folder / "student.onnx", onnx={"input": "input", "output": "logits", "output_kind": "class_map",
                                                "output_dtype": "uint8"})
    with pytest.raises(ConfigError, match="^student.onnx outputs a uint8 class map, which TensorRT 8.5.2"):
        build_engine(str(folder / "student.onnx"), print_trtexec=True, trt_version="8.5.2")
    build_engine(str(folder / "student.onnx"), print_trtexec=True, trt_version="10.3.0")


def test_print_trtexec_implicit_int8_keeps_the_users_pins_beside_the_float_layers(folder, no_tensorrt):
    result = build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True, trt_version="8.5.2",
                          layer_precision=["/up/Resize=fp16"])
    pins = next(w for w in shlex.split(result["trtexec"]) if w.startswith("--layerPrecisions="))
    float_layers = sidecar(folder / "student.calib.onnx")["quantization"]["float_layers"]
    assert pins == "--layerPrecisions=" + ",".join([f"{n}:fp32" for n in float_layers] + ["/up/Resize:fp16"])


def test_print_trtexec_uses_the_installed_tensorrt_by_default(folder, monkeypatch):
    monkeypatch.setattr(api, "tensorrt_available", lambda: (True, "10.7.0"))
    assert build_engine(str(folder / "student.onnx"), fp16=True, print_trtexec=True)["tensorrt"] == "10.7.0"


def test_print_trtexec_names_the_models_input_and_the_files_to_copy(folder, no_tensorrt, capsys):
    edit_sidecar(folder / "student.onnx", onnx={"input": "images", "output": "logits"})
    cache = folder / "t.cache"
    cache.write_bytes(b"FAKECACHE:Orin-8.7")
    words = shlex.split(build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True,
                                     trt_version="8.5.2", timing_cache=str(cache))["trtexec"])
    assert "--minShapes=images:1x3x8x12" in words and "--timingCacheFile=t.cache" in words
    said = "".join(capsys.readouterr().err.split())
    assert "Copystudent.calib.onnx,student.calib.trt8502.cache,t.cachetothetarget" in said
    edit_sidecar(folder / "student.onnx", onnx=None)
    cache.unlink()  # a timing cache that does not exist yet is named on the line but not copied
    words = shlex.split(build_engine(str(folder / "student.onnx"), print_trtexec=True, trt_version="10.3.0",
                                     timing_cache=str(cache))["trtexec"])
    assert "--minShapes=input:1x3x8x12" in words and "--timingCacheFile=t.cache" in words
    said = "".join(capsys.readouterr().err.split())
    assert "Copystudent.onnxtothetarget" in said


@pytest.mark.parametrize("timing_cache", ["none", "", None, "default"])
def test_print_trtexec_names_no_timing_cache_unless_given_a_file(folder, no_tensorrt, timing_cache):
    line = build_engine(str(folder / "student.onnx"), print_trtexec=True, trt_version="10.3.0",
                        timing_cache=timing_cache)["trtexec"]
    assert "--timingCacheFile" not in line


def test_print_trtexec_of_the_qdq_model_itself_is_an_int8_engine(folder, no_tensorrt):
    words = shlex.split(build_engine(str(folder / "student.int8.onnx"), print_trtexec=True,
                                     trt_version="10.3.0")["trtexec"])
    assert "--onnx=student.int8.onnx" in words and "--saveEngine=student.int8.engine" in words and "--int8" in words


def test_print_trtexec_obeys_a_users_pin(folder, no_tensorrt):
    words = shlex.split(build_engine(str(folder / "student.onnx"), fp16=True, print_trtexec=True,
                                     trt_version="10.3.0", layer_precision=["/head/Conv=fp32"])["trtexec"])
    assert "--layerPrecisions=/head/Conv:fp32" in words and "--precisionConstraints=obey" in words


def test_an_onnx_with_a_zero_batch_is_dynamic(tmp_path):
    assert api.onnx_fixed_batch(tiny_model(tmp_path, batch=0)) is None


def test_the_onnxruntime_artifact_is_the_model_optimised_and_computes_the_same(folder, no_tensorrt):
    import onnxruntime as ort

    build_engine(str(folder / "student.onnx"))
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 12)).astype(np.float32)
    source = ort.InferenceSession(str(folder / "student.onnx"), providers=["CPUExecutionProvider"])
    built = ort.InferenceSession(str(folder / "student.fp32.ort.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(built.run(None, {"input": x})[0], source.run(None, {"input": x})[0], atol=1e-5)


def test_the_dla_alone_is_said_to_be_ignored_on_onnxruntime(folder, no_tensorrt, capsys):
    build_engine(str(folder / "student.onnx"), dla_core=0)
    assert "apply to TensorRT engines only" in " ".join(capsys.readouterr().err.split())
    build_engine(str(folder / "student.onnx"), str(folder / "p.onnx"), layer_precision=["/head/Conv=fp32"])
    assert "apply to TensorRT engines only" in " ".join(capsys.readouterr().err.split())


def test_the_dla_takes_a_static_shape_and_refuses_a_dynamic_one(folder, monkeypatch, tmp_path):
    trt = with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    build_engine(str(folder / "student.onnx"), str(folder / "s.engine"), int8=True, dla_core=0, shape="4:4:4",
                 timing_cache="none")
    assert trt.engine_record(folder / "s.engine")["profiles"] == [
        {"input": [[4, 3, 8, 12], [4, 3, 8, 12], [4, 3, 8, 12]]}]
    with pytest.raises(ConfigError, match="static batch"):
        build_engine(str(folder / "student.onnx"), str(folder / "d.engine"), int8=True, dla_core=0, shape="1:4:8",
                     timing_cache="none")


def test_print_trtexec_honours_int8_source_cache(folder, no_tensorrt):
    words = shlex.split(build_engine(str(folder / "student.onnx"), int8=True, print_trtexec=True,
                                     trt_version="10.3.0", int8_source="cache")["trtexec"])
    assert "--onnx=student.calib.onnx" in words and "--calib=student.calib.trt100300.cache" in words


@pytest.mark.parametrize("version, binary", [("8.5.2", "/usr/src/tensorrt/bin/trtexec"), ("10.7.0", "trtexec")])
def test_print_trtexec_names_the_binary_of_that_tensorrt(folder, no_tensorrt, version, binary):
    words = shlex.split(build_engine(str(folder / "student.onnx"), fp16=True, print_trtexec=True,
                                     trt_version=version)["trtexec"])
    assert words[0] == binary


def test_fp16_io_on_tensorrt_11_is_said(folder, monkeypatch, tmp_path, capsys):
    with_tensorrt(monkeypatch, "11.4.0", tmp_path / "home")
    build_engine(str(folder / "student.onnx"), fp16=True, fp16_io=True, timing_cache="none")
    assert "Wrote student.fp16.onnx (FP16 weights and compute, FP16 input/output)" in " ".join(
        capsys.readouterr().err.split())


@pytest.mark.parametrize("timing_cache", ["", "none", None])
def test_no_timing_cache_when_asked_for_none(folder, monkeypatch, tmp_path, timing_cache):
    with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), fp16=True, timing_cache=timing_cache)
    assert meta["engine"]["timing_cache"] is None and not (tmp_path / "home").exists()


def test_the_default_timing_cache_is_per_tensorrt_version(folder, monkeypatch, tmp_path):
    with_tensorrt(monkeypatch, "10.3.0", tmp_path / "home")
    meta = build_engine(str(folder / "student.onnx"), fp16=True)
    assert meta["engine"]["timing_cache"]["path"] == str(tmp_path / "home" / "edgeseg" / "tensorrt" /
                                                         "timing-10.3.0.cache")


def test_onnx_fixed_batch_does_not_read_external_weights(tmp_path):
    import onnx

    model = onnx.load(str(tiny_model(tmp_path, batch=2)))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()  # copied without its weights: the batch is still in the graph
    assert api.onnx_fixed_batch(tmp_path / "ext.onnx") == 2
