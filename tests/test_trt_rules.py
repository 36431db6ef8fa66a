"""The TensorRT rules check refuses what TensorRT's ONNX parser refuses, and passes what edgeseg writes.

Each broken graph below is a one-rule change of a clean Q/DQ convolution that passes on
every target, so a refusal is caused by that rule alone. The artifacts are edgeseg's own
(export, export --argmax, the FP16 ONNX, calibrate's Q/DQ model and cache twin, a foreign
torch.onnx.export calibrated as it is), checked for every TensorRT in ALL_TARGETS.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.engine.trt_rules import (ALL_TARGETS, TensorRTRulesError, check_for_tensorrt,
                                      require_tensorrt_parsable, table_for)
from edgeseg.errors import ConfigError


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _qdq_conv(*, bias="float", w_scale=(0.1, 0.2), w_zero=(0, 0), axis=0, zero_point=True):
    """x -> Q/DQ -> Conv(DQ(per-channel INT8 weights), bias) -> y: TensorRT's explicit-quantization layout."""
    init = [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "x_zero_point"),
            numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "w_quantized"),
            numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(w_zero, np.int8), "w_zero_point")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero_point"], ["xd"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["w_quantized", "w_scale"] + (["w_zero_point"] if zero_point else []),
                              ["w"], name="w_dq", **({} if axis is None else {"axis": axis}))]
    if bias == "int32":  # what ONNX Runtime's QDQQuantizer writes with QuantizeBias (its default)
        init += [numpy_helper.from_array(np.array([7, -3], np.int32), "conv.bias_quantized"),
                 numpy_helper.from_array(np.array([0.005, 0.01], np.float32), "conv.bias_scale"),
                 numpy_helper.from_array(np.array([0, 0], np.int32), "conv.bias_zero_point")]
        nodes.append(helper.make_node("DequantizeLinear", ["conv.bias_quantized", "conv.bias_scale",
                                                           "conv.bias_zero_point"], ["b"], name="bias_dq", axis=0))
    else:
        init.append(numpy_helper.from_array(np.array([0.5, -0.5], np.float32), "b"))
    nodes.append(helper.make_node("Conv", ["xd", "w", "b"], ["y"], name="conv"))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], init)


def test_the_clean_qdq_convolution_passes_every_target():
    onnx.checker.check_model(_qdq_conv(), full_check=True)
    for version in ALL_TARGETS:
        assert check_for_tensorrt(_qdq_conv(), version) == []


def test_an_int32_bias_into_dequantize_linear_is_refused_on_every_target(tmp_path):
    path = tmp_path / "old.int8.onnx"
    onnx.save(_qdq_conv(bias="int32"), str(path))
    for version in ALL_TARGETS:
        problems = check_for_tensorrt(path, version)
        assert len(problems) == 1 and "INT32 tensor 'conv.bias_quantized'" in problems[0] and "bias" in problems[0]
        with pytest.raises(TensorRTRulesError, match=r"old\.int8\.onnx will not parse .*conv\.bias_quantized.*"
                                                     r"recalibrate with edgeseg calibrate.*float biases\.$"):
            require_tensorrt_parsable(path, version)


@pytest.mark.parametrize("change,expected", [
    ({"w_zero": (0, 3)}, "nonzero zero point 'w_zero_point'"),
    ({"w_scale": (0.1, -0.2)}, "scale 'w_scale' with 1 value(s) that are not positive and finite (such as -0.2"),
    ({"w_scale": (float("inf"), 0.2)}, "scale 'w_scale' with 1 value(s) that are not positive and finite"),
    ({"w_scale": (0.1, 0.2, 0.3), "w_zero": (0, 0, 0)}, "3 per-channel scales in 'w_scale' but its input "
                                                        "'w_quantized' has 2 along axis 0"),
    ({"w_zero": (0,)}, "has 2 scale(s) but 1 zero point(s)"),
    ({"axis": 4}, "axis 4, outside [-4, 3] for its 4-D input 'w_quantized'"),
    ({"axis": None}, "per-channel scale 'w_scale' but no axis"),
    ({"w_scale": ((0.1,), (0.2,)), "w_zero": ((0,), (0,))}, "2-D scale 'w_scale'"),  # block scales: INT4/FP8/FP4
])
def test_each_broken_qdq_rule_is_refused_on_every_target(change, expected):
    for version in ALL_TARGETS:
        problems = check_for_tensorrt(_qdq_conv(**change), version)
        assert len(problems) == 1 and expected in problems[0] and "'w_dq'" in problems[0], (version, problems)


def test_tensorrt_8_5_needs_the_zero_point_that_10_and_later_default():
    assert "has no zero point" in " ".join(check_for_tensorrt(_qdq_conv(zero_point=False), "8.5.2"))
    assert check_for_tensorrt(_qdq_conv(zero_point=False), "10.3.0") == []


def test_layer_normalization_is_refused_on_8_5_and_taken_from_10_on():
    # operators.md: "LayerNormalization | N" for 8.5, "Y | FP32, FP16, BF16" for 10.x and 11.x
    model = _model([helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], name="ln", axis=-1)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
                   [numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
                    numpy_helper.from_array(np.zeros(8, np.float32), "beta")])
    assert check_for_tensorrt(model, "8.5.2") == ["LayerNormalization 'ln': TensorRT 8.5's parser does not support "
                                                  "LayerNormalization"]
    assert check_for_tensorrt(model, "10.3.0") == check_for_tensorrt(model, "11.1.0") == []


def _relu(elem_type=TensorProto.FLOAT, opset=17, domain=""):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu", domain=domain)
    return _model([node], [helper.make_tensor_value_info("x", elem_type, [2])],
                  [helper.make_tensor_value_info("y", elem_type, [2])], opset=opset)


def test_opset_outside_the_documented_range_is_refused():
    # 8.5: "up to Opset 17"; 10.x: "opset 9 to opset 20"; 11.1: "opset 9 to opset 24"
    assert check_for_tensorrt(_relu(opset=21), "8.5.2") == ["the model's ONNX opset is 21, but TensorRT 8.5's parser "
                                                            "takes opsets up to 17"]
    assert "takes opsets 9 to 20" in check_for_tensorrt(_relu(opset=21), "10.3.0")[0]
    assert check_for_tensorrt(_relu(opset=21), "11.1.0") == []
    assert "takes opsets 9 to 24" in check_for_tensorrt(_relu(opset=8), "11.1.0")[0]


def test_input_types_follow_each_versions_table():
    # Relu: "FP32, FP16, INT8" on 8.5, "FP32, FP16, BF16, INT32, INT64" on 10.x
    assert "works on INT32 tensor 'x'" in check_for_tensorrt(_relu(TensorProto.INT32), "8.5.2")[0]
    assert check_for_tensorrt(_relu(TensorProto.INT32), "10.3.0") == []
    assert "works on INT8 tensor 'x'" in check_for_tensorrt(_relu(TensorProto.INT8), "10.3.0")[0]
    assert check_for_tensorrt(_relu(TensorProto.DOUBLE), "8.5.2") == []  # the parser casts DOUBLE down to FLOAT
    fill = _model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill",
                                    value=helper.make_tensor("v", TensorProto.INT64, [1], [0]))],
                  [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                  [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    assert check_for_tensorrt(fill, "8.5.2") == []  # the doc says FP32; 8.5's importer refuses only UINT8


def test_an_operator_outside_onnx_is_refused():
    assert "com.microsoft operator" in check_for_tensorrt(_relu(domain="com.microsoft"), "10.3.0")[0]


@pytest.mark.parametrize("version,table", [("8.5.2", "8.5"), ("8.6", "8.5"), ("10.3.0", "10.3"), ("10.15", "10.3"),
                                           ("11.1", "11.1"), ("11.4.0.106", "11.1"), ("12", "11.1")])
def test_a_version_takes_the_newest_table_at_or_below_it(version, table):
    assert table_for(version).version == table


@pytest.mark.parametrize("version,expected", [("8.4.3", "older than 8.5, the oldest"), ("7", "older than 8.5"),
                                              ("ten", "is not MAJOR.MINOR[.PATCH]; give one like 10.3.0.")])
def test_versions_before_8_5_or_unreadable_are_refused(version, expected):
    with pytest.raises(ConfigError) as refused:
        table_for(version)
    assert expected in str(refused.value)


# --- edgeseg's own artifacts -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unet(tiny_teacher, tiny_data, tmp_path_factory):
    """The tiny U-Net exported and calibrated the ways edgeseg does (a few layers: every step is quick)."""
    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate

    folder = tmp_path_factory.mktemp("unet")
    for name, options in {"unet": {}, "unet.int32": {"argmax": True, "argmax_dtype": "int32"},
                          "unet.uint8": {"argmax": True, "argmax_dtype": "uint8"}}.items():
        export(str(tiny_teacher), str(folder / f"{name}.onnx"), data=str(tiny_data), **options)
    fast = {"num": 4, "method": "minmax", "bias_correction": False}
    calibrate(str(folder / "unet.onnx"), str(tiny_data), str(folder / "budget.int8.onnx"), data=str(tiny_data),
              max_miou_drop=0.0, **fast)
    calibrate(str(folder / "unet.int32.onnx"), str(tiny_data), str(folder / "classes.int8.onnx"), **fast)
    calibrate(str(folder / "unet.onnx"), str(tiny_data), str(folder / "asym.int8.onnx"), symmetric=False, **fast)
    return folder


@pytest.fixture(scope="module")
def foreign(tiny_data, tmp_path_factory):
    """torchvision's LR-ASPP exported with plain torch.onnx.export (no sidecar), calibrated as it is."""
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from edgeseg.data.dataset import dataset_info
    from edgeseg.quant.api import calibrate

    torch.manual_seed(0)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                    num_classes=dataset_info(tiny_data).num_classes).eval()
    path = tmp_path_factory.mktemp("foreign") / "lraspp.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["input.1"])
    calibrate(str(path), str(tiny_data / "train" / "images"), num=4, method="minmax", bias_correction=False)
    return path


@pytest.fixture(scope="module")
def edgeseg_artifacts(tiny_onnx, tiny_int8, unet, foreign, tmp_path_factory):
    from edgeseg.engine.fp16_onnx import write_fp16_onnx

    fp16 = write_fp16_onnx(tiny_onnx, tmp_path_factory.mktemp("fp16") / "student.fp16.onnx")
    return {"export": tiny_onnx, "fp16": fp16, "calibrate": tiny_int8,
            "calibrate cache twin": tiny_int8.with_name("student.calib.onnx"),
            "calibrate --max-miou-drop": unet / "budget.int8.onnx", "export --argmax int32": unet / "unet.int32.onnx",
            "calibrated int32 class map": unet / "classes.int8.onnx", "foreign": foreign,
            "foreign calibrated": foreign.with_name("lraspp.int8.onnx")}


def _ops(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_the_artifacts_are_what_they_claim(edgeseg_artifacts):
    """So that the passing test below is not vacuous."""
    for name in ("calibrate", "calibrate --max-miou-drop", "calibrated int32 class map", "foreign calibrated"):
        model = onnx.load(str(edgeseg_artifacts[name]))
        weights = {t.name: t.data_type for t in model.graph.initializer}
        read = [weights.get(n.input[0]) for n in model.graph.node if n.op_type == "DequantizeLinear"]
        assert TensorProto.INT8 in read and TensorProto.INT32 not in read, name
    assert TensorProto.FLOAT16 in {t.data_type for t in onnx.load(str(edgeseg_artifacts["fp16"])).graph.initializer}
    class_maps = _ops(edgeseg_artifacts["export --argmax int32"]) & _ops(
        edgeseg_artifacts["calibrated int32 class map"])
    assert {"ArgMax", "Cast", "DequantizeLinear"} - class_maps == {"DequantizeLinear"}  # the Q/DQ one has it too
    budget = edgeseg_artifacts["calibrate --max-miou-drop"]
    assert json.loads(budget.with_name("budget.int8.onnx.json").read_text())["quantization"]["fallback_layers"]
    assert "DequantizeLinear" not in _ops(edgeseg_artifacts["calibrate cache twin"])


@pytest.mark.parametrize("version", ALL_TARGETS)
def test_edgeseg_artifacts_pass_on_every_target(edgeseg_artifacts, version):
    problems = {name: check_for_tensorrt(path, version) for name, path in edgeseg_artifacts.items()}
    assert problems == {name: [] for name in edgeseg_artifacts}
    for path in edgeseg_artifacts.values():
        require_tensorrt_parsable(path, version)


def test_a_uint8_class_map_passes_from_10_on_and_is_refused_on_8_5(unet):
    # 8.5's Cast lists "FP32, FP16, INT32, INT8, BOOL" (no UINT8); 10.x and 11.x list UINT8
    path = unet / "unet.uint8.onnx"
    assert check_for_tensorrt(path, "10.3.0") == check_for_tensorrt(path, "11.1.0") == []
    with pytest.raises(TensorRTRulesError, match="casts to UINT8.*--argmax-dtype int32"):
        require_tensorrt_parsable(path, "8.5.2")


def test_asymmetric_calibration_is_refused_on_every_target(unet):
    for version in ALL_TARGETS:
        problems = check_for_tensorrt(unet / "asym.int8.onnx", version)
        assert problems and all("asymmetric" in p for p in problems)
        assert "QuantizeLinear 'input_QuantizeLinear' has zero point 'input_zero_point' of type UINT8" in problems[0]
        assert any("has nonzero zero point 'input_zero_point'" in p for p in problems)
        with pytest.raises(TensorRTRulesError, match="without --asymmetric"):
            require_tensorrt_parsable(unet / "asym.int8.onnx", version)


def test_onnx_runtimes_default_quantize_bias_is_refused(unet, tmp_path, monkeypatch):
    """The real bug: ONNX Runtime's QDQQuantizer with QuantizeBias True (its default) writes INT32 biases."""
    from onnxruntime.quantization import qdq_quantizer

    from edgeseg.quant.qdq import write_qdq

    class OldStyle(qdq_quantizer.QDQQuantizer):
        def __init__(self, **kwargs):
            super().__init__(**dict(kwargs, extra_options=dict(kwargs["extra_options"], QuantizeBias=True)))

    monkeypatch.setattr(qdq_quantizer, "QDQQuantizer", OldStyle)
    ranges = json.loads((unet / "budget.ranges.json").read_text())["tensors"]
    shutil.copy(unet / "unet.onnx", tmp_path / "unet.onnx")
    write_qdq(tmp_path / "unet.onnx", tmp_path / "old.int8.onnx", {n: (t["low"], t["high"]) for n, t in ranges.items()})
    for version in ALL_TARGETS:
        problems = check_for_tensorrt(tmp_path / "old.int8.onnx", version)
        assert problems and all("a bias quantized to INT32" in p for p in problems)


def test_a_transformer_reaches_tensorrt_8_5_through_opset_16(tiny_data, tmp_path):
    """SegFormer's LayerNormalization is an operator from opset 17, which TensorRT 8.5's parser lacks: the refusal
    says to export at opset 16, and that export (LayerNormalization written as basic operators) parses there."""
    from edgeseg.engine.trt_rules import require_tensorrt_parsable
    from edgeseg.exporting.api import export
    from edgeseg.training.api import train

    checkpoint = tmp_path / "segformer.pt"
    train("segformer-b0", str(tiny_data), str(checkpoint), epochs=1, batch_size=4, tensorboard=False)
    export(str(checkpoint), str(tmp_path / "s17.onnx"), data=str(tiny_data))
    with pytest.raises(TensorRTRulesError, match="LayerNormalization.*re-export it with edgeseg export --opset 16"):
        require_tensorrt_parsable(tmp_path / "s17.onnx", "8.5.2")
    export(str(checkpoint), str(tmp_path / "s16.onnx"), data=str(tiny_data), opset=16)
    for version in ALL_TARGETS:
        assert check_for_tensorrt(str(tmp_path / "s16.onnx"), version) == []


# sha256 of "Operator: types" lines (sorted; None where the doc says N) of onnx-tensorrt's docs/operators.md,
# computed from the upstream files named in edgeseg/engine/trt_operators.py, with that module's stated deviations
# applied: 8.5 ConstantOfShape widened to what its importer takes; 10.1's "INF64" read as INT64 and Selu's trailing
# comma dropped. 11.1's is the table as transcribed (its operators.md was not in the store at the check).
UPSTREAM_DIGESTS = {
    "8.5": "44f0e2b6fe3c8be7102b57a5943acc9ed67c43da70c2c7a3ad30284afb0b7423",  # fd119fe, release/8.5-GA
    "10.3": "82abf78ad56863f5b381951e21a717db6a054d294bcf5e3f9450652eab7b433f",  # 96e7811, release/10.1-GA
    "11.1": "d3eef0c9bfd11cbe33b9e82de06dc7de2455f3824f2c49fef69a2634b5ffc668",  # 7c51a63, as transcribed
}


@pytest.mark.parametrize("version", sorted(UPSTREAM_DIGESTS))
def test_each_operator_table_is_its_operators_md(version):
    """Every row of the copied support matrix, not a sample: one wrong type list or a row lost changes the digest."""
    import hashlib

    from edgeseg.engine.trt_operators import TABLES

    rows = TABLES[version].operators
    text = "\n".join(f"{op}: {types}" for op, types in sorted(rows.items()))
    assert hashlib.sha256(text.encode()).hexdigest() == UPSTREAM_DIGESTS[version]


def test_each_tables_opsets_and_narrowed_types_are_the_docs():
    from edgeseg.engine.trt_operators import TABLES

    stated = {version: (table.min_opset, table.max_opset, dict(table.cast_down)) for version, table in TABLES.items()}
    assert stated == {"8.5": (None, 17, {"DOUBLE": "FP32", "INT64": "INT32"}),  # "up to Opset 17"
                      "10.3": (9, 20, {"DOUBLE": "FP32"}),  # "opset 9 to opset 20"
                      "11.1": (9, 24, {"DOUBLE": "FP32"})}  # "opset 9 to opset 24"
