"""build-engine's TensorRT path, through Polygraphy's real code, against a double that answers as TensorRT
documents (tests/trt_double.py).

Each test encodes one documented TensorRT behaviour that made a real build fail or
silently drop INT8 or FP16 before, and asserts what reached TensorRT (flags, profiles,
precisions, calibrator), so that it cannot come back.
"""
from __future__ import annotations

import shutil
import types

import pytest

from edgeseg.errors import ConfigError, EdgesegError
from tests import trt_double
from tests.trt_double import fake_tensorrt


def use_tensorrt(monkeypatch, version, dla_cores=2):
    return trt_double.install(monkeypatch, version, dla_cores)


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
    assert (calibrated / "t.cache.stale").read_bytes() == b"FAKECACHE:Xavier-7.2"  # set aside, not deleted


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
    assert asked["engine"]["rebuild"].endswith("--int8 --int8-source cache")


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
    record = trt.engine_record(calibrated / "m.engine")
    pinned = record["pinned"]
    assert len(pinned) == 2 and all(name.startswith(node) for name in pinned) and set(pinned.values()) == {"FLOAT"}
    assert meta["engine"]["layer_precisions"] == {node: "fp32"}
    # a pin is only a hint unless TensorRT is told to obey it
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(record["flags"])
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


@pytest.mark.parametrize("version,typed", [("8.5.2", False), ("10.3.0", False), ("11.4.0", True)])
def test_network_typing_per_generation(calibrated, monkeypatch, version, typed):
    trt = use_tensorrt(monkeypatch, version)
    build(calibrated, int8=True)
    assert trt.engine_record(calibrated / "m.engine")["strongly_typed"] is typed


def test_tensorrt_11_without_the_strongly_typed_flag_still_builds(calibrated, monkeypatch):
    """A release where strong typing is simply always on may drop the flag: it is asked for only where it exists."""
    import enum

    trt = use_tensorrt(monkeypatch, "11.4.0")
    monkeypatch.setattr(trt, "NetworkDefinitionCreationFlag", enum.IntEnum("NetworkDefinitionCreationFlag", {}))
    assert build(calibrated, int8=True)["engine"]["int8"]["source"] == "qdq"


@pytest.mark.parametrize("version,header,source", [("8.5.2", "TRT-8502-", "student.calib.onnx"),
                                                   ("10.3.0", None, "student.int8.onnx")])
def test_print_trtexec_hands_each_tensorrt_what_it_accepts(calibrated, version, header, source):
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["build-engine", str(calibrated / "student.onnx"), "--int8", "--print-trtexec",
                                      "--trt-version", version, "--timing-cache", "none"])
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    words = line.split()
    # it runs on the Jetson in the folder the user copies the named files to: bare names, JetPack's trtexec path
    assert words[0] == "/usr/src/tensorrt/bin/trtexec" and str(calibrated) not in line and "/home" not in line
    assert f"--onnx={source}" in words and "--int8" in words and "--fp16" in words
    calib = [w.split("=", 1)[1] for w in words if w.startswith("--calib=")]
    if header is None:
        assert not calib
    else:
        assert calib == ["student.calib.trt8502.cache"]
        # headed for this TensorRT and for trtexec's calibrator: another header and trtexec calibrates on noise
        assert (calibrated / calib[0]).read_text().splitlines()[0] == header + "EntropyCalibration2"
        assert any(w.startswith("--layerPrecisions=") for w in words) and "--precisionConstraints=obey" in words
    told = result.output.replace("\n", " ")
    assert all(name in told.split(" to the target")[0] for name in [source] + calib)
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

    runner = TensorRTRunner("m.engine", (3, 8, 8), "fp16", "cuda", {"engine": {"batch": {"min": 1, "opt": 1,
                                                                                          "max": 4}}})
    runner.runner = types.SimpleNamespace(context=Context())
    runner.input_name, runner.input_dtype, runner.output_name = "input", np.float32, "o"
    with pytest.raises(EdgesegError, match="batch profile is 1:1:4"):
        runner._infer_impl(np.zeros((8, 3, 8, 8), np.float32))


def test_runner_names_the_size_an_engine_from_elsewhere_was_built_for():
    """No sidecar engine section (trtexec): a refused shape means --input-size was wrong, and TensorRT's
    ICudaEngine.get_tensor_shape says which size it takes."""
    import numpy as np

    from edgeseg.runtime.tensorrt_runner import TensorRTRunner

    class Context:
        def set_input_shape(self, name, shape):
            return tuple(shape[2:]) == (360, 480)

    class Engine:
        def get_tensor_shape(self, name):
            return (1, 3, 360, 480)

    runner = TensorRTRunner("trtexec.engine", (3, 64, 96), "unknown", "cuda", {"input": {}})
    runner.runner, runner.engine = types.SimpleNamespace(context=Context()), Engine()
    runner.input_name, runner.input_dtype, runner.output_name = "input", np.float32, "o"
    with pytest.raises(EdgesegError, match=r"it was built for 1x3x360x480; give that size with --input-size"):
        runner._infer_impl(np.zeros((1, 3, 64, 96), np.float32))


def test_runner_reads_engine_dtypes_without_trt_nptype():
    """TensorRT 8.5.2's trt.nptype raises under numpy >= 1.24, which JetPack 5 installs."""
    import numpy as np

    from edgeseg.runtime.tensorrt_runner import numpy_dtype
    from tests.trt_double import DataType

    trt = fake_tensorrt("8.5.2")
    with pytest.raises(AttributeError):
        trt.nptype(DataType.HALF)
    assert [numpy_dtype(trt, t) for t in (DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32)] == \
        [np.float32, np.float16, np.int8, np.int32]


def test_pinning_skips_constants_and_shape_layers_unless_the_user_named_them(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.engine.tensorrt_build import _pin_layer_precisions

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu"), helper.make_node("Shape", ["y"], ["s"], name="shape"),
         helper.make_node("Constant", [], ["c"], name="const",
                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
         helper.make_node("Add", ["y", "c"], ["z"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("s", TensorProto.INT64, None)])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    trt = use_tensorrt(monkeypatch, "10.3.0")
    network = trt.Builder(None).create_network(0)
    assert trt.OnnxParser(network, None).parse_from_file(str(path))
    names = {"relu", "shape", "const", "add"}
    _pin_layer_precisions(trt, network, dict.fromkeys(names, "fp32"), names)
    pinned = {layer.onnx_node for layer in network.layers if layer.precision_is_set}
    assert pinned == {"relu", "add"}
    with pytest.raises(ConfigError, match="does not have: const"):
        _pin_layer_precisions(trt, network, {"const": "fp32"}, names, required={"const"})


def test_a_foreign_onnx_with_a_fixed_batch_gets_that_batch(calibrated, monkeypatch):
    import onnx

    model = onnx.load(str(calibrated / "student.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(calibrated / "fixed.onnx"))
    shutil.copy(calibrated / "student.onnx.json", calibrated / "fixed.onnx.json")
    use_tensorrt(monkeypatch, "10.3.0")
    assert build(calibrated, "fixed.onnx", fp16=True)["engine"]["batch"] == {"min": 1, "opt": 1, "max": 1}
    with pytest.raises(ConfigError, match="fixed batch of 1"):
        build(calibrated, "fixed.onnx", fp16=True, shape="1:2:4")
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["build-engine", str(calibrated / "fixed.onnx"), "--fp16", "--print-trtexec",
                                      "--trt-version", "10.3.0", "--timing-cache", "none"])
    assert result.exit_code == 0 and "--minShapes" not in result.output  # trtexec refuses shapes for a static model


def test_a_layer_pinned_to_fp16_needs_fp16_allowed():
    from edgeseg.engine.tensorrt_build import make_plan

    with pytest.raises(ConfigError, match="needs --fp16 too"):
        make_plan("10.3.0", fp16=False, int8=False, onnx_is_qdq=False, has_cache=False,
                  layer_precisions={"/head/Conv": "fp16"})
    assert make_plan("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False,
                     layer_precisions={"/head/Conv": "fp16"}).obey_precision_constraints


def test_a_cache_for_trtexec_needs_the_exact_version(calibrated):
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["build-engine", str(calibrated / "student.onnx"), "--int8", "--print-trtexec",
                                      "--trt-version", "8.5", "--timing-cache", "none"])
    assert result.exit_code != 0 and "major.minor.patch" in result.output
    assert not list(calibrated.glob("*.trt*.cache"))


def test_tensorrt_refuses_an_asymmetric_qdq_model_in_one_sentence(calibrated, monkeypatch):
    import json

    sidecar = calibrated / "student.int8.onnx.json"
    meta = json.loads(sidecar.read_text())
    meta["quantization"]["symmetric"] = False
    sidecar.write_text(json.dumps(meta))
    use_tensorrt(monkeypatch, "10.3.0")
    with pytest.raises(ConfigError, match="calibrated with --asymmetric"):
        build(calibrated, int8=True)


def test_placement_summary_ends_where_the_log_moves_on():
    from edgeseg.engine.tensorrt_build import layer_placement

    lines = ["---------- Layers Running on DLA ----------", "[DlaLayer] {ForeignNode[a...b]}",
             "---------- Layers Running on GPU ----------", "[GpuLayer] RESIZE: up",
             "Total Activation Memory: 1234, Total Weights: 99", "[MemUsageChange] ..."]
    placement = layer_placement(lines, None)
    assert placement["dla_layers"] == ["{ForeignNode[a...b]}"] and placement["gpu_layers"] == ["RESIZE: up"]
    old = layer_placement(["--------------- Layers running on DLA: ", "{conv1,bn1}, {conv2,relu2},",
                           "--------------- Layers running on GPU: ", "Resize_7, Shape_3", "Something else"], None)
    assert old["dla_layers"] == ["{conv1,bn1}", "{conv2,relu2}"] and old["gpu_layers"] == ["Resize_7", "Shape_3"]


@pytest.mark.parametrize("built,running,ok", [("10.3.0", "10.7.0", True), ("10.7.0", "10.3.0", False),
                                              ("8.6.1", "10.3.0", True), ("8.6.1", "11.4.0", False),
                                              ("10.3.0", "11.4.0", True), ("8.5.2", "10.3.0", False)])
def test_version_compatible_engines_run_where_nvidia_supports_them(built, running, ok):
    from edgeseg.runtime.tensorrt_runner import version_compatible_with

    assert version_compatible_with(built, running) is ok


def test_tensorrt_8_5_refuses_a_uint8_class_map_and_10_takes_it(calibrated, monkeypatch):
    import json

    meta = json.loads((calibrated / "student.onnx.json").read_text())
    meta["onnx"] = dict(meta.get("onnx") or {}, output_kind="class_map", output_dtype="uint8")
    (calibrated / "student.onnx.json").write_text(json.dumps(meta))
    use_tensorrt(monkeypatch, "8.5.2")
    with pytest.raises(ConfigError, match="--argmax-dtype int32"):
        build(calibrated, fp16=True)
    use_tensorrt(monkeypatch, "10.3.0")
    assert build(calibrated, fp16=True)["engine"]["backend"] == "tensorrt"


def test_print_trtexec_for_tensorrt_11_fp16_names_the_fp16_onnx_before_it_exists(calibrated):
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["build-engine", str(calibrated / "student.onnx"), "--fp16", "--print-trtexec",
                                      "--trt-version", "11.4.0", "--timing-cache", "none"])
    assert result.exit_code == 0, result.output
    assert "--onnx=student.fp16.onnx" in result.output.split() and "--stronglyTyped" in result.output


