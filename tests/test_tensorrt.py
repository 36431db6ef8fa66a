"""TensorRT engines, built and run for real: only where tensorrt imports and a GPU is present."""
import numpy as np
import pytest

pytestmark = pytest.mark.trt


@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    from edgeseg.engine.api import tensorrt_available

    usable, why = tensorrt_available()
    if not usable:
        pytest.skip(why)
    return trt


def _agreement(engine_path, onnx_path, tiny_data):
    from edgeseg.data.dataset import resolve_split
    from edgeseg.runtime.loader import describe, open_runner
    from edgeseg.runtime.preprocess import preprocess

    split = resolve_split(tiny_data, "val")
    engine, reference = describe(engine_path), describe(onnx_path)
    agree = []
    with open_runner(engine) as a, open_runner(reference) as b:
        for i in range(len(split)):
            batch = preprocess(split.image(i), engine.input_spec)
            agree.append((a.infer(batch).argmax(1) == b.infer(batch).argmax(1)).mean())
    return 100 * float(np.mean(agree))


def test_fp16_engine_agrees_with_onnxruntime(trt, tiny_onnx, tiny_data, tmp_path):
    from edgeseg.engine.api import build_engine

    meta = build_engine(str(tiny_onnx), str(tmp_path / "m.engine"), fp16=True, backend="tensorrt")
    assert meta["engine"]["backend"] == "tensorrt" and meta["engine"]["tensorrt"] == trt.__version__
    assert _agreement(tmp_path / "m.engine", tiny_onnx, tiny_data) >= 99.5


def test_int8_engine_keeps_miou(trt, tiny_int8, tiny_onnx, tiny_data, tmp_path):
    from edgeseg.benchmark.api import eval as evaluate
    from edgeseg.engine.api import build_engine

    build_engine(str(tiny_int8), str(tmp_path / "q.engine"), int8=True, backend="tensorrt")
    assert abs(evaluate(str(tmp_path / "q.engine"), str(tiny_data))["miou"]
               - evaluate(str(tiny_onnx), str(tiny_data))["miou"]) <= 1.0


def test_int8_engine_from_the_calibration_cache_keeps_miou(trt, tiny_int8, tiny_onnx, tiny_data, tmp_path):
    from edgeseg.benchmark.api import eval as evaluate
    from edgeseg.engine.api import build_engine

    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 has no calibration caches")
    meta = build_engine(str(tiny_onnx), str(tmp_path / "c.engine"), int8=True, backend="tensorrt",
                        int8_source="cache")
    assert meta["engine"]["int8"]["source"] == "calibration cache" and meta["engine"]["int8"]["bias_corrected"]
    assert abs(evaluate(str(tmp_path / "c.engine"), str(tiny_data))["miou"]
               - evaluate(str(tiny_onnx), str(tiny_data))["miou"]) <= 2.0


def test_tampered_engine_is_refused(trt, tiny_onnx, tmp_path):
    from edgeseg.engine.api import build_engine
    from edgeseg.errors import UntrustedFileError
    from edgeseg.runtime.loader import describe, open_runner

    build_engine(str(tiny_onnx), str(tmp_path / "m.engine"), backend="tensorrt")
    with open(tmp_path / "m.engine", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UntrustedFileError, match="--trust-engine"):
        open_runner(describe(tmp_path / "m.engine")).activate()
