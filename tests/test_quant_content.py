"""What calibrate writes, checked by content: the biases in the Q/DQ model and its FP32 twin, the class-map tail.

The reference for the biases is the FP32 model's own bias minus the shift that
conv_error.measure_shifts measured during this very calibration (recorded by a spy), so
a calibration that measures the shifts but writes them nowhere fails here, whatever
its sidecar or ranges JSON count.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from edgeseg.sidecar import model_output, read_sidecar

ELEM_TYPE = {"uint8": TensorProto.UINT8, "int32": TensorProto.INT32}


def _copy_with_sidecar(path: Path, folder: Path) -> Path:
    """A copy of a session artifact and its sidecar, so nothing is written beside the shared one."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / path.name
    shutil.copy(path, copy)
    shutil.copy(path.with_name(path.name + ".json"), copy.with_name(copy.name + ".json"))
    return copy


def _conv_biases(model) -> dict:
    """{conv name: its bias as a float initializer (zeros for a conv without one)}; a bias computed by a node fails."""
    initializers = {init.name: init for init in model.graph.initializer}
    weights_of = {}
    biases = {}
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        if len(node.input) > 2 and node.input[2]:
            name = node.input[2]
            assert name in initializers, (f"{node.name}'s bias {name} is computed by "
                                          f"{producers[name].op_type if name in producers else '?'}, not a float "
                                          f"initializer")
            bias = numpy_helper.to_array(initializers[name])
            assert bias.dtype == np.float32, f"{node.name}'s bias is {bias.dtype}, not float32"
            biases[node.name] = bias
        else:
            weights_of[node.name] = node.input[1]
            biases[node.name] = None  # no bias: its output channel count comes from the weights below
    for name, weight in weights_of.items():
        channels = (numpy_helper.to_array(initializers[weight]).shape[0] if weight in initializers
                    else numpy_helper.to_array(initializers[producers[weight].input[0]]).shape[0])
        biases[name] = np.zeros(channels, np.float32)
    return biases


@pytest.fixture(scope="module")
def corrected(tiny_onnx, tiny_data, tmp_path_factory):
    """calibrate (minmax, bias correction on) with a spy on measure_shifts: (paths, measured shifts, sidecar)."""
    import edgeseg.quant.conv_error as conv_error
    from edgeseg.quant.api import calibrate

    folder = tmp_path_factory.mktemp("bias")
    fp32 = _copy_with_sidecar(tiny_onnx, folder)
    measured = []
    real = conv_error.measure_shifts

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        measured.append(result)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_error, "measure_shifts", spy)
        meta = calibrate(str(fp32), str(tiny_data / "train" / "images"), str(folder / "student.int8.onnx"),
                         method="minmax", num=4)
    assert len(measured) == 1, "calibrate measured the shifts more than once (or not at all)"
    shifts = {conv: by_method["minmax"] for conv, by_method in measured[0].items()}
    return {"fp32": fp32, "int8": folder / "student.int8.onnx", "twin": folder / "student.calib.onnx",
            "ranges": folder / "student.ranges.json", "shifts": shifts, "meta": meta}


def _fp32_biases(path: Path) -> dict:
    from edgeseg.quant.qdq import ensure_node_names

    model = onnx.load(str(path))
    ensure_node_names(model)  # the names calibrate measured and wrote under
    return _conv_biases(model)


def test_qdq_model_biases_are_the_fp32_biases_minus_the_measured_shift(corrected):
    shifts, float_nodes = corrected["shifts"], set(corrected["meta"]["quantization"]["float_nodes"])
    fp32 = _fp32_biases(corrected["fp32"])
    written = _conv_biases(onnx.load(str(corrected["int8"])))
    quantised = [name for name in shifts if name not in float_nodes]
    assert quantised, "no quantised conv had its shift measured: the test would check nothing"
    # the shifts are big enough that a model written without them is told apart
    assert max(float(np.abs(shifts[name]).max()) for name in quantised) > 1e-3
    for name in quantised:
        expected = (fp32[name].astype(np.float64) - shifts[name]).astype(np.float32)
        np.testing.assert_allclose(written[name], expected, rtol=0, atol=1e-6, err_msg=name)
    for name in set(fp32) - set(quantised):  # the logits path (and any conv not measured) keeps its own bias
        np.testing.assert_array_equal(written[name], fp32[name], err_msg=name)
    # the count the ranges JSON reports is the count of biases that really changed
    changed = [name for name in fp32 if not np.array_equal(written[name], fp32[name])]
    assert json.loads(corrected["ranges"].read_text())["bias_corrected_layers"] == len(changed) == len(quantised)
    assert corrected["meta"]["quantization"]["bias_corrected_layers"] == len(changed)


def test_cache_twin_carries_the_same_corrected_biases(corrected):
    """The .calib.onnx beside the TensorRT cache: FP32 graph, FP32 bias minus the same shift, as the Q/DQ model."""
    shifts, float_nodes = corrected["shifts"], set(corrected["meta"]["quantization"]["float_nodes"])
    fp32 = _fp32_biases(corrected["fp32"])
    twin_model = onnx.load(str(corrected["twin"]))
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in twin_model.graph.node)
    twin = _conv_biases(twin_model)
    qdq = _conv_biases(onnx.load(str(corrected["int8"])))
    quantised = [name for name in shifts if name not in float_nodes]
    assert quantised and set(twin) == set(fp32)
    for name in quantised:
        expected = (fp32[name].astype(np.float64) - shifts[name]).astype(np.float32)
        np.testing.assert_allclose(twin[name], expected, rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(twin[name], qdq[name], err_msg=name)
    for name in set(fp32) - set(quantised):
        np.testing.assert_array_equal(twin[name], fp32[name], err_msg=name)
    changed = [name for name in fp32 if not np.array_equal(twin[name], fp32[name])]
    assert read_sidecar(corrected["twin"])["quantization"]["bias_corrected_layers"] == len(changed) == len(quantised)


def test_without_bias_correction_the_biases_are_the_fp32_ones(tiny_onnx, tiny_data, tmp_path):
    """The reference above against its control: --no-bias-correction writes the FP32 biases untouched, in both files."""
    from edgeseg.quant.api import calibrate

    fp32 = _copy_with_sidecar(tiny_onnx, tmp_path)
    meta = calibrate(str(fp32), str(tiny_data / "train" / "images"), str(tmp_path / "student.int8.onnx"),
                     method="minmax", num=4, bias_correction=False)
    expected = _fp32_biases(fp32)
    for written in (tmp_path / "student.int8.onnx", tmp_path / "student.calib.onnx"):
        biases = _conv_biases(onnx.load(str(written)))
        assert set(biases) == set(expected)
        for name, bias in expected.items():
            np.testing.assert_array_equal(biases[name], bias, err_msg=f"{written.name} {name}")
    assert meta["quantization"]["bias_corrected_layers"] == 0


@pytest.fixture(scope="module")
def class_map_models(tiny_student, tiny_class_map_onnx, tiny_data, tmp_path_factory):
    """{dtype: exported class-map ONNX}: the session's uint8 one (copied) and an int32 one exported here."""
    from edgeseg.exporting.api import export

    folder = tmp_path_factory.mktemp("class-maps")
    int32 = folder / "student.int32.onnx"
    export(str(tiny_student), str(int32), data=str(tiny_data), argmax=True, argmax_dtype="int32", verify_images=2)
    return {"uint8": _copy_with_sidecar(tiny_class_map_onnx, folder / "uint8"), "int32": int32}


def _run(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_class_map_output_type_is_what_the_sidecar_says_after_export_and_calibrate(
        dtype, class_map_models, tiny_onnx, tiny_data, tmp_path):
    """The written graph's output element type is the sidecar's output_dtype, and its values are the logits'
    argmax on the same input, for the exported model and for its Q/DQ model (tail appended again after
    quantisation) against the Q/DQ logits model calibrated the same way."""
    from edgeseg.quant.api import calibrate

    batch = np.random.default_rng(5).normal(size=(2, 3, 64, 64)).astype(np.float32)
    exported = class_map_models[dtype]
    assert model_output(read_sidecar(exported)) == {"kind": "class_map", "dtype": dtype}
    assert onnx.load(str(exported)).graph.output[0].type.tensor_type.elem_type == ELEM_TYPE[dtype]
    got = _run(exported, batch)
    assert got.dtype == np.dtype(dtype) and got.shape == (2, 64, 64)
    np.testing.assert_array_equal(got, _run(tiny_onnx, batch).argmax(1))

    images = str(tiny_data / "train" / "images")
    settings = dict(method="minmax", num=4, bias_correction=False)
    meta = calibrate(str(exported), images, str(tmp_path / "classes.int8.onnx"), **settings)
    calibrate(str(_copy_with_sidecar(tiny_onnx, tmp_path / "logits")), images,
              str(tmp_path / "logits" / "logits.int8.onnx"), **settings)
    assert model_output(meta) == {"kind": "class_map", "dtype": dtype}
    assert model_output(read_sidecar(tmp_path / "classes.int8.onnx")) == {"kind": "class_map", "dtype": dtype}
    written = onnx.load(str(tmp_path / "classes.int8.onnx"))
    assert written.graph.output[0].type.tensor_type.elem_type == ELEM_TYPE[dtype]
    got = _run(tmp_path / "classes.int8.onnx", batch)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, _run(tmp_path / "logits" / "logits.int8.onnx", batch).argmax(1))
