import sys
from pathlib import Path

import pytest

from edgeseg.engine.api import build_engine
from edgeseg.engine.tensorrt_build import make_plan
from edgeseg.errors import ConfigError


def test_without_tensorrt_the_onnxruntime_artifact_is_built(tiny_int8, capsys):
    meta = build_engine(str(tiny_int8), int8=True)
    assert meta["artifact"] == "student.int8.ort.onnx" and meta["engine"]["backend"] == "onnxruntime"
    assert meta["precision"] == "int8"
    assert "ONNX Runtime" in capsys.readouterr().err


def test_int8_from_the_fp32_model_uses_the_calibrated_sibling(tiny_int8, tiny_onnx, tmp_path):
    meta = build_engine(str(tiny_onnx), str(tmp_path / "e.engine"), int8=True)
    assert meta["artifact"] == "e.ort.onnx" and meta["precision"] == "int8"
    assert meta["parent"]["artifact"] == "student.int8.onnx"


def test_int8_without_calibration_says_what_to_do(tiny_onnx, tmp_path):
    import shutil

    lonely = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, lonely)
    shutil.copy(tiny_onnx.with_name("student.onnx.json"), tmp_path / "m.onnx.json")
    with pytest.raises(ConfigError, match="run edgeseg calibrate m.onnx first"):
        build_engine(str(lonely), int8=True)


@pytest.mark.parametrize("version,explicit,typed", [("8.5.2", True, False), ("10.3.0", False, False),
                                                   ("11.0.0", False, True)])
def test_build_plan_per_tensorrt_generation(version, explicit, typed):
    plan = make_plan(version, fp16=False, int8=True, onnx_is_qdq=True, has_cache=False)
    assert plan.explicit_batch_flag is explicit and plan.strongly_typed is typed
    # INT8 brings FP16 along wherever flags exist: the layers left in float must not run in FP32
    assert plan.fp16_flag is (not typed) and plan.int8_flag is (not typed) and plan.use_calibration_cache is False
    if typed:  # strongly typed: FP16 for the float layers of a Q/DQ model cannot be asked for, and is refused
        with pytest.raises(ConfigError, match="drop --fp16"):
            make_plan(version, fp16=True, int8=True, onnx_is_qdq=True, has_cache=False)


def test_implicit_int8_uses_the_cache_before_tensorrt_11():
    assert make_plan("8.5.2", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True).use_calibration_cache
    with pytest.raises(ConfigError, match="Q/DQ"):
        make_plan("11.1.0", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True)


def test_float_fallback_layers_are_pinned_only_for_implicit_int8():
    implicit = make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True, float_layers=True)
    explicit = make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False, float_layers=True)
    assert implicit.obey_precision_constraints and not explicit.obey_precision_constraints


def test_dla_and_precision_rules_per_generation():
    dla = make_plan("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False, dla_core=1)
    assert dla.dla_core == 1 and dla.fp16_flag
    with pytest.raises(ConfigError, match="DLA runs only FP16 or INT8"):
        make_plan("8.5.2", fp16=False, int8=False, onnx_is_qdq=False, has_cache=False, dla_core=0)
    # TensorRT 11.4 runs the DLA on AGX Orin (JetPack 7): strongly typed, precision from the ONNX
    assert make_plan("11.4.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False, dla_core=0).dla_core == 0
    with pytest.raises(ConfigError, match="strongly typed.*--max-miou-drop"):
        make_plan("11.4.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False,
                  layer_precisions={"/head/Conv": "fp32"})
    with pytest.raises(ConfigError, match="8.6 or newer"):
        make_plan("8.5.2", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False, version_compatible=True)
    with pytest.raises(ConfigError, match="must be one of"):
        make_plan("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False,
                  layer_precisions={"/head/Conv": "fp8"})
    pinned = make_plan("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False,
                       layer_precisions={"/head/Conv": "fp32"})
    assert pinned.obey_precision_constraints and pinned.layer_precisions == {"/head/Conv": "fp32"}


def test_tensorrt_11_fp16_comes_from_an_fp16_onnx():
    plan = make_plan("11.4.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False)
    assert plan.needs_fp16_onnx and plan.strongly_typed and not plan.fp16_flag
    assert not make_plan("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False).needs_fp16_onnx


@pytest.mark.parametrize("version,present,absent", [
    ("8.5.2", ["--int8", "--calib=c.cache", "--fp16"], ["--stronglyTyped"]),
    ("10.3.0", ["--int8", "--calib=c.cache", "--useDLACore=0", "--allowGPUFallback"], ["--stronglyTyped"]),
])
def test_trtexec_command_for_implicit_int8(version, present, absent):
    from edgeseg.engine.trtexec import trtexec_command

    plan = make_plan(version, fp16=True, int8=True, onnx_is_qdq=False, has_cache=True,
                     dla_core=0 if version.startswith("10") else None)
    command = trtexec_command(plan, Path("m.onnx"), Path("m.engine"), input_name="input", input_shape=(3, 64, 96),
                              batch=(1, 2, 4), workspace_mb=1024, calibration_cache=Path("c.cache"))
    words = command.split()
    # on a DLA build the line is for a Jetson, where JetPack does not put trtexec on PATH
    binary = "/usr/src/tensorrt/bin/trtexec" if plan.dla_core is not None else "trtexec"
    assert words[:3] == [binary, "--onnx=m.onnx", "--saveEngine=m.engine"]
    assert "--minShapes=input:1x3x64x96" in words and "--maxShapes=input:4x3x64x96" in words
    assert "--memPoolSize=workspace:1024" in words
    assert all(flag in words for flag in present) and not any(flag in words for flag in absent)


def test_trtexec_command_for_tensorrt_11_has_no_removed_flags():
    from edgeseg.engine.trtexec import trtexec_command

    plan = make_plan("11.4.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False)
    words = trtexec_command(plan, Path("m.int8.onnx"), Path("m.engine"), input_name="input", input_shape=(3, 8, 8),
                            batch=(1, 1, 8), workspace_mb=512, timing_cache=Path("t.cache")).split()
    assert "--stronglyTyped" in words and "--timingCacheFile=t.cache" in words
    assert not {"--int8", "--fp16", "--best"} & set(words) and not any(w.startswith("--calib") for w in words)


def test_print_trtexec_builds_nothing(tiny_onnx, tiny_int8, tmp_path):  # --int8 reads the calibrated model
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["build-engine", str(tiny_onnx), "--int8", "--print-trtexec", "--trt-version",
                                      "11.4.0", "--shape", "1:2:4", "--timing-cache", "none"])
    assert result.exit_code == 0, result.output
    assert "--stronglyTyped" in result.output and "student.int8.onnx" in result.output
    assert "--optShapes=input:2x3x64x64" in result.output
    assert not list(tiny_onnx.parent.glob("*.engine"))


@pytest.mark.parametrize("shape,message", [("1:4", "MIN:OPT:MAX"), ("4:2:8", "MIN <= OPT <= MAX"),
                                           ("a:b:c", "MIN:OPT:MAX")])
def test_bad_shape_is_one_clear_sentence(shape, message):
    from edgeseg.engine.api import parse_batch_shape

    with pytest.raises(ConfigError, match=message):
        parse_batch_shape(shape, 8)
    assert parse_batch_shape("1:4:8", 8) == (1, 4, 8) and parse_batch_shape(None, 8) == (1, 1, 8)


def test_engine_built_elsewhere_names_the_rebuild_command():
    from edgeseg.runtime.tensorrt_runner import engine_mismatch

    meta = {"engine": {"tensorrt": "10.3.0", "rebuild": "edgeseg build-engine m.onnx --int8",
                       "gpu": {"name": "Orin", "compute_capability": "8.7"}, "plan": {}}}
    orin = {"name": "Orin", "compute_capability": "8.7"}
    assert engine_mismatch(meta, "m.engine", "10.3.0", orin) is None
    message = engine_mismatch(meta, "m.engine", "10.7.0", orin)
    assert "built with TensorRT 10.3.0" in message and message.endswith("edgeseg build-engine m.onnx --int8")
    message = engine_mismatch(meta, "m.engine", "10.3.0", {"name": "Xavier", "compute_capability": "7.2"})
    assert "compute capability 8.7" in message and "Xavier" in message
    compatible = {"engine": dict(meta["engine"], plan={"version_compatible": True})}
    assert engine_mismatch(compatible, "m.engine", "10.7.0", orin) is None  # later TensorRT may run it
    assert "built with TensorRT" in engine_mismatch(compatible, "m.engine", "10.1.0", orin)


def test_version_compatible_engine_needs_the_host_code_opt_in(tmp_path):
    from edgeseg.errors import UntrustedFileError
    from edgeseg.fileio import sha256_of
    from edgeseg.runtime.tensorrt_runner import TensorRTRunner

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    meta = {"sha256": sha256_of(engine), "engine": {"plan": {"version_compatible": True}}}
    with pytest.raises(UntrustedFileError, match="--allow-engine-host-code"):
        TensorRTRunner(str(engine), (3, 8, 8), "fp16", "cuda", meta).activate()


def test_fp16_onnx_keeps_float32_io_and_the_predictions(tiny_onnx, tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from edgeseg.engine.fp16_onnx import write_fp16_onnx

    out = write_fp16_onnx(tiny_onnx, tmp_path / "m.fp16.onnx")
    model = onnx.load(str(out))
    assert [v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)] == \
        [onnx.TensorProto.FLOAT] * 2
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    fp32 = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": batch})[0]
    fp16 = ort.InferenceSession(str(out)).run(None, {"input": batch})[0]
    assert fp16.dtype == np.float32 and (fp32.argmax(1) == fp16.argmax(1)).mean() >= 0.99


def test_an_engine_built_elsewhere_runs_on_what_the_user_says(tmp_path, monkeypatch):
    """A trtexec engine has no sidecar: bench and predict ask for its input size, then for --trust-engine (no
    sha256 vouches for it), before TensorRT is ever asked to deserialise it."""
    from click.testing import CliRunner

    from edgeseg.cli.main import cli
    from edgeseg.errors import InputFileError
    from edgeseg.runtime.loader import describe
    from edgeseg.spec import ModelFacts

    engine = tmp_path / "trtexec.engine"
    engine.write_bytes(b"serialized by trtexec")
    with pytest.raises(InputFileError, match=r"facts=ModelFacts\(input_size=\(H, W\)\) .* and trust_engine=True if you "
                                             r"built it"):
        describe(engine)
    artifact = describe(engine, facts=ModelFacts(input_size=(64, 96), num_classes=5))
    assert (artifact.input_spec.height, artifact.input_spec.width) == (64, 96) and artifact.dataset.num_classes == 5
    assert artifact.backend == "tensorrt" and artifact.precision == "unknown"
    assert not (tmp_path / "trtexec.engine.json").exists()  # nothing written next to the user's file

    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "street.jpg")
    for verb in (["bench", str(engine), "--iters", "1"], ["predict", str(engine), str(tmp_path / "street.jpg"),
                                                          "--out", str(tmp_path / "out")]):
        result = CliRunner().invoke(cli, verb + ["--input-size", "64x96"])
        assert result.exit_code == 2 and "pass --trust-engine if you made it" in result.output, result.output
    assert not (tmp_path / "out").exists()
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as here, also where TensorRT is installed
    result = CliRunner().invoke(cli, ["bench", str(engine), "--iters", "1", "--input-size", "64x96", "--trust-engine"])
    assert result.exit_code == 2 and "TensorRT is not installed" in result.output, result.output

def test_the_onnxruntime_artifact_is_the_extended_level_graph_and_says_so(tiny_onnx, tmp_path):
    """Extended fuses Conv+activation (com.microsoft FusedConv) and stays portable; 'all' would bake this CPU's
    NCHWc layout into the file, 'basic' would fuse nothing. The sidecar records what was done."""
    import collections

    import numpy as np
    import onnx
    import onnxruntime as ort

    from edgeseg.engine.api import build_engine

    meta = build_engine(str(tiny_onnx), str(tmp_path / "m.ort.onnx"), backend="onnxruntime")
    assert meta["engine"] == {"onnxruntime": ort.__version__, "optimization": "extended",
                              "provider": "CPUExecutionProvider", "backend": "onnxruntime"}
    ops = collections.Counter((n.domain, n.op_type) for n in onnx.load(str(tmp_path / "m.ort.onnx")).graph.node)
    assert ops[("com.microsoft", "FusedConv")] > 0 and not any(domain.endswith("nchwc") for domain, _ in ops)
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for p in (tiny_onnx, tmp_path / "m.ort.onnx")]
    assert np.allclose(run[0], run[1], atol=1e-4)
