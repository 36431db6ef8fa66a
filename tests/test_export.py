import json

import numpy as np
import onnx
import pytest

from edgeseg.errors import AccuracyError
from edgeseg.exporting import api as export_api


def test_export_is_checked_and_verified(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # dynamic batch
    meta = json.loads(tiny_onnx.with_name("student.onnx.json").read_text())
    assert meta["parity"]["argmax_agreement"] >= 99.9 and meta["parity"]["max_abs_diff"] < 1e-3
    assert meta["precision"] == "fp32" and meta["input"]["height"] == 64


def test_dynamic_batch_runs_in_onnxruntime(tiny_onnx):
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.zeros((3, 3, 64, 64), np.float32)})[0]
    assert out.shape == (3, 8, 64, 64)


def test_export_fails_without_output_when_parity_is_poor(tiny_student, tmp_path, monkeypatch):
    monkeypatch.setattr(export_api, "compare_outputs",
                        lambda *a, **k: {"num_images": 1, "max_abs_diff": 3.0, "argmax_agreement": 97.0})
    out = tmp_path / "bad.onnx"
    with pytest.raises(AccuracyError, match="97.000%"):
        export_api.export(str(tiny_student), str(out))
    assert not out.exists() and not list(tmp_path.iterdir())
