"""What reaches TensorRT through Polygraphy, and what the double refuses when it must.

Polygraphy's real loaders and runner drive tests/trt_double.py; each test asserts what
TensorRT was configured with (flags, profiles, precisions, calibrator, DLA core) or what
it computed, so removing a flag or a binding from edgeseg turns a test red.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseg.errors import EdgesegError
from tests import trt_double


def build(folder, model="student.onnx", **options):
    from edgeseg.engine.api import build_engine

    options.setdefault("timing_cache", "none")
    return build_engine(str(folder / model), str(folder / "m.engine"), backend="tensorrt", **options)


def test_qdq_int8_on_tensorrt_10_sets_int8_and_fp16_and_the_profile(calibrated, monkeypatch):
    trt = trt_double.install(monkeypatch, "10.3.0")
    meta = build(calibrated, int8=True, shape="1:2:4", workspace_mb=512)
    record = trt.engine_record(calibrated / "m.engine")
    # FP16 beside INT8: the classifier and Resize that stay in float must not run in FP32
    # TF32 stays allowed, as TensorRT and trtexec default to (Polygraphy alone would clear it)
    assert {"INT8", "FP16", "TF32"} <= set(record["flags"]) and "OBEY_PRECISION_CONSTRAINTS" not in record["flags"]
    assert record["profiles"] == [{"input": [[1, 3, 64, 64], [2, 3, 64, 64], [4, 3, 64, 64]]}]
    assert record["workspace"] == 512 << 20 and record["calibration"] is None and not record["pinned"]
    assert record["onnx"].endswith("student.int8.onnx") and meta["engine"]["built_with"].startswith("polygraphy")


def test_fp16_alone_sets_fp16_and_not_int8(calibrated, monkeypatch):
    trt = trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, fp16=True)
    flags = set(trt.engine_record(calibrated / "m.engine")["flags"])
    assert "FP16" in flags and "INT8" not in flags


def test_implicit_int8_on_8_5_hands_tensorrt_the_cache_and_pins_the_classifier(calibrated, monkeypatch):
    trt = trt_double.install(monkeypatch, "8.5.2")
    # a minmax-calibrated cache: its scales go to TensorRT headed for the calibrator that reads them
    cache = calibrated / "student.calib.cache"
    cache.write_text(cache.read_text().replace("EntropyCalibration2", "MinMaxCalibration", 1))
    meta = build(calibrated, int8=True)
    record = trt.engine_record(calibrated / "m.engine")
    assert {"INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(record["flags"])
    assert record["calibration"]["calibrator"] == "EntropyCalibration2"
    assert record["calibration"]["cache_header"] == "TRT-8502-EntropyCalibration2"
    assert record["calibration"]["profile"] == {"input": [[1, 3, 64, 64]] * 2 + [[8, 3, 64, 64]]}
    float_layers = meta["engine"]["float_layers"]
    pinned_nodes = {name.rsplit("_", 1)[0] if name not in float_layers else name for name in record["pinned"]}
    assert pinned_nodes == set(float_layers) and set(record["pinned"].values()) == {"FLOAT"}
    assert cache.read_text().startswith("TRT-8502-MinMaxCalibration")  # the user's file is left as it was


def test_tensorrt_11_builds_the_qdq_model_strongly_typed_with_no_precision_flags(calibrated, monkeypatch):
    trt = trt_double.install(monkeypatch, "11.4.0")
    build(calibrated, int8=True)
    record = trt.engine_record(calibrated / "m.engine")
    assert record["strongly_typed"] and not {"INT8", "FP16"} & set(record["flags"]) and "TF32" in record["flags"]


def test_the_dla_core_asked_for_is_the_one_configured_and_loaded(calibrated, monkeypatch):
    trt = trt_double.install(monkeypatch, "10.3.0")
    meta = build(calibrated, int8=True, dla_core=1)
    record = trt.engine_record(calibrated / "m.engine")
    assert record["dla_core"] == 1 and "GPU_FALLBACK" in record["flags"]
    assert meta["engine"]["dla"]["core"] == 1


# --- the double refuses what TensorRT refuses, each reached here without edgeseg's own checks in front ----------

def _polygraphy_build(onnx_path, **config):
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath

    return EngineBytesFromNetwork(NetworkFromOnnxPath(str(onnx_path)), config=CreateConfig(**config))()


def _refusal(capsys) -> str:
    return " ".join(capsys.readouterr().out.split()) + " ".join(capsys.readouterr().err.split())


def test_the_double_refuses_a_qdq_network_without_the_int8_flag(calibrated, monkeypatch, capsys):
    from polygraphy.backend.trt import Profile
    from polygraphy.exception import PolygraphyException

    trt_double.install(monkeypatch, "10.3.0")
    profile = [Profile().add("input", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))]
    with pytest.raises(PolygraphyException):
        _polygraphy_build(calibrated / "student.int8.onnx", fp16=True, profiles=profile)
    assert _polygraphy_build(calibrated / "student.int8.onnx", int8=True, profiles=profile)


def test_the_double_refuses_a_dynamic_profile_on_the_dla(calibrated, monkeypatch):
    from polygraphy.backend.trt import Profile
    from polygraphy.exception import PolygraphyException

    trt_double.install(monkeypatch, "10.3.0")
    dynamic = [Profile().add("input", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))]
    with pytest.raises(PolygraphyException):
        _polygraphy_build(calibrated / "student.onnx", fp16=True, use_dla=True, allow_gpu_fallback=True,
                          profiles=dynamic)
    static = [Profile().add("input", (2, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 64))]
    assert _polygraphy_build(calibrated / "student.onnx", fp16=True, use_dla=True, allow_gpu_fallback=True,
                             profiles=static)


def test_the_double_refuses_a_profile_that_differs_from_a_fixed_dimension(calibrated, monkeypatch):
    import onnx
    from polygraphy.backend.trt import Profile
    from polygraphy.exception import PolygraphyException

    model = onnx.load(str(calibrated / "student.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(calibrated / "fixed.onnx"))
    trt_double.install(monkeypatch, "10.3.0")
    with pytest.raises(PolygraphyException):
        _polygraphy_build(calibrated / "fixed.onnx", profiles=[
            Profile().add("input", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))])


def test_the_double_refuses_a_cache_headed_for_another_tensorrt(calibrated, monkeypatch):
    from polygraphy.backend.trt import Calibrator
    from polygraphy.exception import PolygraphyException

    trt = trt_double.install(monkeypatch, "8.5.2")
    stale = calibrated / "stale.cache"
    stale.write_text((calibrated / "student.calib.cache").read_text().replace("TRT-8502-", "TRT-8601-", 1))
    with pytest.raises(PolygraphyException):  # TensorRT skips the cache, asks for images, and there are none
        _polygraphy_build(calibrated / "student.calib.onnx", int8=True,
                          calibrator=Calibrator([], cache=str(stale), BaseClass=trt.IInt8EntropyCalibrator2))


def test_an_int32_bias_dequantize_never_reaches_the_builder(calibrated, monkeypatch):
    """The Q/DQ layout ONNX Runtime writes by default (INT32 bias into DequantizeLinear) is what TensorRT's parser
    refuses; edgeseg's build says so in one sentence."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(calibrated / "student.int8.onnx"))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3)
    bias = next(t for t in model.graph.initializer if t.name == conv.input[2])
    values = numpy_helper.to_array(bias)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.round(values / 1e-4).astype(np.int32), "bias_q"),
        numpy_helper.from_array(np.array(1e-4, np.float32), "bias_scale"),
        numpy_helper.from_array(np.array(0, np.int32), "bias_zero")])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["bias_q", "bias_scale", "bias_zero"],
                                                ["bias_dq"], name="bias_DequantizeLinear"))
    conv.input[2] = "bias_dq"
    onnx.save(model, str(calibrated / "student.int8.onnx"))
    assert TensorProto.INT32 == model.graph.initializer[-3].data_type
    trt_double.install(monkeypatch, "10.3.0")
    with pytest.raises(EdgesegError, match="will not parse on TensorRT 10.3.0: DequantizeLinear 'bias_DequantizeLin"
                                           "ear' reads INT32 tensor 'bias_q'.*recalibrate with edgeseg calibrate"):
        build(calibrated, int8=True)
    assert not (calibrated / "m.engine").exists()
    # and TensorRT's parser (the double applies the same rules) refuses it when handed the file directly
    from polygraphy.backend.trt import NetworkFromOnnxPath
    from polygraphy.exception import PolygraphyException

    with pytest.raises(PolygraphyException):
        NetworkFromOnnxPath(str(calibrated / "student.int8.onnx"))()


# --- runs through Polygraphy's TrtRunner ----------------------------------------------------------------------

def test_an_engine_runs_through_trtrunner_and_computes_what_the_onnx_computes(calibrated, monkeypatch):
    import onnxruntime as ort

    from edgeseg.runtime.loader import describe, open_runner

    trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, fp16=True, shape="1:2:4")
    batch = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with open_runner(describe(calibrated / "m.engine")) as runner:
        got = runner.infer(batch)
        # the two CUDA events bracket TensorRT's execution alone: not the input and output copies around it
        assert runner.last_compute_ms == trt_double.EXECUTE_MS
    session = ort.InferenceSession(str(calibrated / "student.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": batch})[0]
    assert np.array_equal(got, expected)
    got[:] = 0  # a returned array is the caller's: it outlives the runner


def test_a_dla_engine_loads_only_with_the_runtime_dla_core_set(calibrated, monkeypatch):
    from edgeseg.runtime.loader import describe, open_runner
    from edgeseg.runtime.tensorrt_runner import TensorRTRunner

    trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, int8=True, dla_core=1)
    artifact = describe(calibrated / "m.engine")
    with open_runner(artifact) as runner:  # the sidecar's core is set before loading
        assert runner.infer(np.zeros((1, 3, 64, 64), np.float32)).shape[2:] == (64, 64)
    meta = json.loads(json.dumps(artifact.meta))
    meta["engine"]["dla"] = None
    with pytest.raises(EdgesegError, match="could not load"):
        TensorRTRunner(str(artifact.path), (3, 64, 64), "int8", "cuda", meta).activate()
    with TensorRTRunner(str(artifact.path), (3, 64, 64), "int8", "cuda", meta, dla_core=1):
        pass


def test_an_engine_from_elsewhere_with_two_outputs_binds_both(tmp_path, monkeypatch):
    """trtexec engines may carry extra outputs (an argmax beside the logits): every output gets an allocator."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["logits"], name="conv"),
         helper.make_node("ArgMax", ["logits"], ["classes"], name="argmax", axis=1, keepdims=0)],
        "two", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4, 16, 16]),
         helper.make_tensor_value_info("classes", TensorProto.INT64, ["n", 16, 16])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "two.onnx"))
    trt_double.install(monkeypatch, "10.3.0")
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    engine = EngineBytesFromNetwork(NetworkFromOnnxPath(str(tmp_path / "two.onnx")), config=CreateConfig(
        profiles=[Profile().add("input", (1, 3, 16, 16), (1, 3, 16, 16), (2, 3, 16, 16))]))()
    (tmp_path / "two.engine").write_bytes(bytes(engine))
    from edgeseg.runtime.tensorrt_runner import TensorRTRunner

    batch = np.random.default_rng(2).normal(size=(2, 3, 16, 16)).astype(np.float32)
    with TensorRTRunner(str(tmp_path / "two.engine"), (3, 16, 16), "unknown", "cuda", {}, trust_engine=True) as runner:
        got = runner.infer(batch)
    expected = ort.InferenceSession(str(tmp_path / "two.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": batch})[0]
    assert np.array_equal(got, expected)


def test_inputs_take_the_engine_input_type():
    from edgeseg.runtime.tensorrt_runner import as_input

    batch = np.array([[-300.4, -1.6, 0.4, 2.5, 130.0]], np.float32)
    assert as_input(batch, np.dtype(np.int8)).tolist() == [[-128, -2, 0, 2, 127]]
    assert as_input(batch, np.dtype(np.uint8)).tolist() == [[0, 0, 0, 2, 130]]
    half = as_input(batch, np.dtype(np.float16))
    assert half.dtype == np.float16 and np.allclose(half, batch, rtol=1e-3)


def test_cuda_facts_come_from_the_libcudart_polygraphy_loads(monkeypatch):
    """No cuda-python or pycuda: the GPU's name, compute capability, free memory and event timing all go through
    Polygraphy's CUDA wrapper (its ctypes handle on the system's libcudart), which the double stands in for."""
    from edgeseg.benchmark.memory import cuda_free_memory_reader
    from edgeseg.engine.tensorrt_build import gpu_identity
    from edgeseg.runtime.cuda_device import EventTimer, free_bytes

    trt_double.install(monkeypatch, "10.3.0")
    assert gpu_identity() == {"name": "Orin", "compute_capability": "8.7"}
    assert free_bytes() == 1 << 30
    read, source = cuda_free_memory_reader()  # torch is loaded here but has no CUDA
    assert read() == 1 << 30 and "libcudart" in source
    timer = EventTimer()
    timer.record(0, 1)
    trt_double.CLOCK[0] += 2.5
    timer.record(1, 1)
    assert timer.elapsed_ms() == 2.5
    timer.close()


@pytest.mark.parametrize("name", ["user.onnx", "pruned.onnx", "pruned.int8.onnx", "pruned.calib.onnx"])
def test_the_committed_camvid_models_parse_on_every_targeted_tensorrt(name):
    from pathlib import Path

    from edgeseg.engine.trt_rules import ALL_TARGETS, check_for_tensorrt

    path = Path(__file__).resolve().parents[1] / "models" / "camvid" / name
    assert {version: check_for_tensorrt(str(path), version)[:2] for version in ALL_TARGETS} == \
        dict.fromkeys(ALL_TARGETS, [])


def test_a_cuda_failure_while_opening_an_engine_is_one_sentence(calibrated, monkeypatch):
    """Polygraphy raises (and logs) its own exception; the user gets edgeseg's sentence and nothing is left held."""
    import polygraphy.cuda.cuda as polygraphy_cuda

    from edgeseg.runtime.loader import describe, open_runner

    trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, fp16=True)
    fake = polygraphy_cuda.G_CUDA
    monkeypatch.setattr(fake, "create_stream", lambda: fake.check(2))  # cudaErrorMemoryAllocation
    runner = open_runner(describe(calibrated / "m.engine"))
    with pytest.raises(EdgesegError, match=r"TensorRT could not open m.engine: CUDA Error: 2"):
        runner.activate()
    assert runner.runner is None and runner.timer is None and not runner.is_active


def test_no_cuda_runtime_library_says_where_to_get_one(calibrated, monkeypatch):
    import polygraphy.cuda.cuda as polygraphy_cuda

    from edgeseg.errors import MissingDependencyError
    from edgeseg.runtime.loader import describe, open_runner

    trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, fp16=True)

    def no_library():
        raise OSError("libcudart.so: cannot open shared object file")  # what ctypes.CDLL says

    monkeypatch.setattr(polygraphy_cuda, "G_CUDA", None)
    monkeypatch.setattr(polygraphy_cuda, "Cuda", no_library)
    with pytest.raises(MissingDependencyError, match="LD_LIBRARY_PATH or pip install nvidia-cuda-runtime-cu12"):
        open_runner(describe(calibrated / "m.engine")).activate()


def test_a_dla_engine_built_elsewhere_loads_on_the_core_the_user_names(calibrated, monkeypatch, tiny_data):
    """trtexec --useDLACore=1 --saveEngine=x.engine: no sidecar says the core, so bench/eval/predict take
    --engine-dla-core and TensorRT's runtime is put on that core before the engine is loaded."""
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, int8=True, dla_core=1)
    foreign = calibrated / "elsewhere.engine"
    foreign.write_bytes((calibrated / "m.engine").read_bytes())  # no sidecar: as trtexec leaves it
    common = ["eval", str(foreign), "--data", str(tiny_data), "--input-size", "64x64", "--trust-engine"]
    refused = CliRunner().invoke(cli, common)
    assert refused.exit_code != 0 and "could not load" in refused.output
    result = CliRunner().invoke(cli, common + ["--engine-dla-core", "1"])
    assert result.exit_code == 0, result.output


def test_the_double_refuses_an_fp16_pin_without_fp16_and_a_pinned_shape_tensor(calibrated, monkeypatch):
    """Reached without make_plan's own checks in front: TensorRT fails such builds, which is why edgeseg refuses
    --layer-precision NAME=fp16 without --fp16 and skips shape layers when it pins."""
    from polygraphy.backend.trt import (CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessNetwork,
                                        Profile)
    from polygraphy.exception import PolygraphyException

    trt = trt_double.install(monkeypatch, "10.3.0")
    profile = [Profile().add("input", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))]

    def pin(kind, precision):
        def apply(network):
            layer = next(layer for layer in network if layer.type == kind)
            layer.precision = precision
        return apply

    conv_in_half = PostprocessNetwork(NetworkFromOnnxPath(str(calibrated / "student.onnx")),
                                      pin(trt.LayerType.CONVOLUTION, trt.float16))
    with pytest.raises(PolygraphyException):
        EngineBytesFromNetwork(conv_in_half, config=CreateConfig(profiles=profile, precision_constraints="obey"))()
    assert EngineBytesFromNetwork(conv_in_half, config=CreateConfig(fp16=True, profiles=profile,
                                                                    precision_constraints="obey"))()
    shape_pinned = PostprocessNetwork(NetworkFromOnnxPath(str(calibrated / "student.onnx")),
                                      pin(trt.LayerType.SHAPE, trt.float32))
    with pytest.raises(PolygraphyException):  # the student's Resize sizes come from a Shape layer
        EngineBytesFromNetwork(shape_pinned, config=CreateConfig(profiles=profile, precision_constraints="obey"))()


def test_the_double_refuses_host_code_unless_the_runtime_allows_it(calibrated, monkeypatch):
    trt = trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, fp16=True, version_compatible=True)
    runtime = trt.Runtime(trt.Logger())
    assert runtime.deserialize_cuda_engine((calibrated / "m.engine").read_bytes()) is None
    runtime.engine_host_code_allowed = True
    assert runtime.deserialize_cuda_engine((calibrated / "m.engine").read_bytes()) is not None


def test_host_code_of_an_engine_from_elsewhere_runs_only_with_the_opt_in(calibrated, monkeypatch):
    """No sidecar says the engine is version-compatible, so TensorRT's runtime itself must keep its host code off."""
    from edgeseg.runtime.tensorrt_runner import TensorRTRunner

    trt_double.install(monkeypatch, "10.3.0")
    build(calibrated, fp16=True, version_compatible=True)
    foreign = str(calibrated / "m.engine")
    with pytest.raises(EdgesegError, match="could not load"):
        TensorRTRunner(foreign, (3, 64, 64), "unknown", "cuda", {}, trust_engine=True).activate()
    with TensorRTRunner(foreign, (3, 64, 64), "unknown", "cuda", {}, trust_engine=True, allow_host_code=True):
        pass
