
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
    plan = make_plan(version, fp16=True, int8=True, onnx_is_qdq=True, has_cache=False)
    assert plan.explicit_batch_flag is explicit and plan.strongly_typed is typed
    assert plan.fp16_flag is (not typed) and plan.use_calibration_cache is False


def test_implicit_int8_uses_the_cache_before_tensorrt_11():
    assert make_plan("8.5.2", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True).use_calibration_cache
    with pytest.raises(ConfigError, match="Q/DQ"):
        make_plan("11.1.0", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True)


def test_float_fallback_layers_are_pinned_only_for_implicit_int8():
    implicit = make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True, float_layers=True)
    explicit = make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False, float_layers=True)
    assert implicit.obey_precision_constraints and not explicit.obey_precision_constraints
