"""build-engine's TensorRT path against a double that answers as TensorRT documents (tests/trt_double.py).

Each test encodes one documented TensorRT behaviour that made a real build fail or
silently drop INT8 before (issue 17), so that it cannot come back.
"""
from __future__ import annotations

import shutil
import sys

import pytest

from edgeseg.errors import ConfigError, EdgesegError
from tests.trt_double import fake_tensorrt


@pytest.fixture
def calibrated(tiny_int8, tmp_path):
    """A private copy of the tiny model and everything calibrate wrote beside it."""
    for path in tiny_int8.parent.glob("student.*"):
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    return tmp_path


def use_tensorrt(monkeypatch, version, dla_cores=2):
    trt = fake_tensorrt(version, dla_cores)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def build(folder, model="student.onnx", **options):
    from edgeseg.engine.api import build_engine

    options.setdefault("timing_cache", "none")
    return build_engine(str(folder / model), str(folder / "m.engine"), backend="tensorrt", **options)


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0", "11.4.0"])
def test_first_build_without_a_timing_cache_file_writes_one(calibrated, monkeypatch, version):
    trt = use_tensorrt(monkeypatch, version)
    cache = calibrated / "timing" / "t.cache"
    meta = build(calibrated, fp16=True, timing_cache=str(cache))
    assert meta["engine"]["timing_cache"] == {"path": str(cache), "reused": False}
    assert cache.read_bytes().startswith(b"FAKECACHE:") and (calibrated / "m.engine").exists()
    assert build(calibrated, fp16=True, timing_cache=str(cache))["engine"]["timing_cache"]["reused"]
    assert meta["engine"]["tensorrt"] == trt.__version__


def test_a_timing_cache_from_another_gpu_is_replaced_not_mixed(calibrated, monkeypatch):
    use_tensorrt(monkeypatch, "10.3.0")
    cache = calibrated / "t.cache"
    cache.write_bytes(b"FAKECACHE:Xavier-7.2")
    meta = build(calibrated, fp16=True, timing_cache=str(cache))
    assert meta["engine"]["timing_cache"]["reused"] is False and cache.read_bytes() == b"FAKECACHE:Orin-8.7"


def test_tensorrt_8_5_builds_implicit_int8_from_a_cache_headed_for_it(calibrated, monkeypatch):
    trt = use_tensorrt(monkeypatch, "8.5.2")
    assert (calibrated / "student.calib.cache").read_text().startswith("TRT-8502-")
    # a cache headed for another TensorRT is skipped by TensorRT, and the build then fails (no images)
    (calibrated / "student.calib.cache").write_text(
        (calibrated / "student.calib.cache").read_text().replace("TRT-8502-", "TRT-8601-", 1))
    meta = build(calibrated, int8=True)
    assert meta["engine"]["int8"]["source"] == "calibration cache"
    # built from calibrate's bias-corrected FP32 twin, with the classifier pinned to FP32 (every layer of it)
    assert meta["engine"]["int8"]["onnx"] == "student.calib.onnx" and meta["engine"]["int8"]["bias_corrected"]
    float_layers = meta["engine"]["float_layers"]
    assert float_layers and set(float_layers) == set(meta["engine"]["layer_precisions"])
    pinned = trt.engine_record(calibrated / "m.engine")["pinned"]
    assert len(pinned) == 2 * len(float_layers)  # the double parses every node into two layers


def test_tensorrt_10_int8_means_the_qdq_model_even_with_a_cache(calibrated, monkeypatch):
    use_tensorrt(monkeypatch, "10.3.0")
    assert (calibrated / "student.calib.cache").exists()
    meta = build(calibrated, int8=True)
    assert meta["parent"]["artifact"] == "student.int8.onnx" and meta["engine"]["int8"]["source"] == "qdq"
    assert not meta["engine"]["plan"]["use_calibration_cache"]
    asked = build(calibrated, int8=True, int8_source="cache")
    assert asked["engine"]["int8"]["source"] == "calibration cache"


def test_tensorrt_11_has_no_calibration_cache_to_ask_for(calibrated, monkeypatch):
    use_tensorrt(monkeypatch, "11.4.0")
    with pytest.raises(ConfigError, match="TensorRT 11 has no calibration caches"):
        build(calibrated, int8=True, int8_source="cache")
    assert build(calibrated, int8=True)["engine"]["int8"]["source"] == "qdq"


def test_version_compatible_engine_loads_back_with_host_code_allowed(calibrated, monkeypatch):
    use_tensorrt(monkeypatch, "10.3.0")
    meta = build(calibrated, fp16=True, version_compatible=True)
    assert meta["engine"]["plan"]["version_compatible"] and meta["engine"]["io"][0]["name"] == "input"


def test_an_engine_that_does_not_load_back_is_not_written(calibrated, monkeypatch):
    trt = use_tensorrt(monkeypatch, "10.3.0")
    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", lambda self, data: None)
    with pytest.raises(EdgesegError, match="could not load it back"):
        build(calibrated, fp16=True)
    assert not (calibrated / "m.engine").exists()


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_dla_builds_use_a_static_profile_and_report_real_placement(calibrated, monkeypatch, version):
    use_tensorrt(monkeypatch, version)
    meta = build(calibrated, int8=True, dla_core=1)
    assert meta["engine"]["batch"] == {"min": 1, "opt": 1, "max": 1}
    placement = meta["engine"]["dla"]["placement"]
    assert placement["source"] == "TensorRT build log"
    assert len(placement["dla_layers"]) == 1 and placement["dla_layers"][0].startswith("{ForeignNode[")
    # Myelin's GPU subgraph is a ForeignNode too: it stays on the GPU side of the report
    assert any("MYELIN" in name for name in placement["gpu_layers"])
    assert all("Resize" in name for name in placement["gpu_layers"] if "MYELIN" not in name)
    assert len(placement["engine_layers"]) > 10
    assert build(calibrated, int8=True, dla_core=0, shape="4:4:4")["engine"]["batch"]["max"] == 4


def test_dla_refuses_a_dynamic_batch_and_a_core_the_board_lacks(calibrated, monkeypatch):
    use_tensorrt(monkeypatch, "10.3.0", dla_cores=2)
    with pytest.raises(ConfigError, match="static batch"):
        build(calibrated, int8=True, dla_core=0, shape="1:4:8")
    with pytest.raises(ConfigError, match="2 DLA core"):
        build(calibrated, int8=True, dla_core=2)
    use_tensorrt(monkeypatch, "10.3.0", dla_cores=0)
    with pytest.raises(ConfigError, match="drop --dla-core"):
        build(calibrated, int8=True, dla_core=0)


def test_the_double_rejects_a_dynamic_profile_on_the_dla(calibrated, monkeypatch):
    """The static profile above matters: TensorRT's DLA build fails on a dynamic one."""
    from edgeseg.engine.tensorrt_build import build_engine_file

    use_tensorrt(monkeypatch, "10.3.0")
    with pytest.raises(ConfigError, match="static batch"):
        build_engine_file(calibrated / "student.int8.onnx", calibrated / "x.engine", fp16=False, int8=True,
                          onnx_is_qdq=True, calibration_cache=None, input_shape=(3, 64, 64), max_batch=8,
                          workspace_mb=64, dla_core=0)


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_layer_precision_pins_every_layer_a_node_became(calibrated, monkeypatch, version):
    import onnx

    trt = use_tensorrt(monkeypatch, version)
    node = next(n.name for n in onnx.load(str(calibrated / "student.onnx")).graph.node if n.op_type == "Conv")
    meta = build(calibrated, fp16=True, layer_precision=[f"{node}=fp32"])
    pinned = trt.engine_record(calibrated / "m.engine")["pinned"]
    assert len(pinned) == 2 and pinned[0].startswith(node) and meta["engine"]["layer_precisions"] == {node: "fp32"}
    with pytest.raises(ConfigError, match="layers the network does not have: /no/such"):
        build(calibrated, fp16=True, layer_precision=["/no/such=fp32"])


def test_strongly_typed_refusal_names_an_option_that_exists():
    from click.testing import CliRunner

    from edgeseg.cli.main import cli
    from edgeseg.engine.tensorrt_build import make_plan

    with pytest.raises(ConfigError) as error:
        make_plan("11.4.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False,
                  layer_precisions={"/head/Conv": "fp32"})
    options = [word for word in str(error.value).split() if word.startswith("--")]
    assert options == ["--layer-precision", "--max-miou-drop,"]
    assert "--max-miou-drop" in CliRunner().invoke(cli, ["calibrate", "--help"]).output


def test_network_flags_per_generation(monkeypatch):
    from edgeseg.engine.tensorrt_build import _network_flags, make_plan

    plan_8 = make_plan("8.5.2", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False)
    plan_11 = make_plan("11.4.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False)
    assert _network_flags(fake_tensorrt("8.5.2"), plan_8) == 1 << 0
    assert _network_flags(fake_tensorrt("11.4.0"), plan_11) == 1 << 1
    no_flag = fake_tensorrt("11.4.0")
    del no_flag.NetworkDefinitionCreationFlag.STRONGLY_TYPED  # a release where strong typing is simply always on
    assert _network_flags(no_flag, plan_11) == 0


@pytest.mark.parametrize("version,header,source", [("8.5.2", "TRT-8502-", "student.calib.onnx"),
                                                   ("10.3.0", None, "student.int8.onnx")])
def test_print_trtexec_hands_each_tensorrt_what_it_accepts(calibrated, version, header, source):
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["build-engine", str(calibrated / "student.onnx"), "--int8", "--print-trtexec",
                                      "--trt-version", version, "--timing-cache", "none"])
    assert result.exit_code == 0, result.output
    words = result.output.split()
    assert f"--onnx={calibrated / source}" in words
    calib = [w.split("=", 1)[1] for w in words if w.startswith("--calib=")]
    if header is None:
        assert not calib and "--int8" in words
    else:
        assert calib == [str(calibrated / "student.calib.trt8502.cache")]
        assert open(calib[0]).readline().startswith(header)
        assert any(w.startswith("--layerPrecisions=") for w in words) and "--precisionConstraints=obey" in words
    assert not list(calibrated.glob("*.engine"))


def test_print_trtexec_for_the_dla_on_jetpack_6_heads_the_cache_100300(calibrated):
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["build-engine", str(calibrated / "student.onnx"), "--int8", "--print-trtexec",
                                      "--trt-version", "10.3.0", "--dla-core", "0", "--timing-cache", "none"])
    assert result.exit_code == 0, result.output
    assert "--useDLACore=0" in result.output and "--maxShapes=input:1x3x64x64" in result.output
    assert (calibrated / "student.calib.trt100300.cache").read_text().startswith("TRT-100300-")


def test_runner_refuses_a_batch_outside_the_engine_profile():
    import numpy as np

    from edgeseg.runtime.tensorrt_runner import TensorRTRunner

    class Context:  # IExecutionContext.set_input_shape returns False for a shape outside the profile
        def set_input_shape(self, name, shape):
            return shape[0] <= 4

        def get_tensor_shape(self, name):
            raise AssertionError("the output shape must not be asked for after a refused input shape")

    runner = TensorRTRunner("m.engine", (3, 8, 8), "fp16", "cuda", {"engine": {"batch": {"min": 1, "opt": 1,
                                                                                          "max": 4}}})
    runner.context, runner.tensor_api = Context(), True
    runner.cuda = runner.stream = None
    runner.input_name, runner.input_dtype, runner.output_name, runner.output_dtype = "input", np.float32, "o", np.float32
    with pytest.raises(EdgesegError, match="batch profile is 1:1:4"):
        runner._infer_impl(np.zeros((8, 3, 8, 8), np.float32))
