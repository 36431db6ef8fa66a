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
                                      require_tensorrt_parsable, table_for, violations)
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
    # ranges clipped at the 95th percentile lose accuracy on any CPU, so the budget must keep layers in float (with
    # minmax ranges the tiny U-Net's INT8 equalled FP32 on an AMD EPYC and nothing was kept)
    calibrate(str(folder / "unet.onnx"), str(tiny_data), str(folder / "budget.int8.onnx"), data=str(tiny_data),
              max_miou_drop=0.0, num=4, method="percentile", percentile=95.0, bias_correction=False)
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


# --- each violation's exact words and fix, per target (mutation testing, issue 29) --------------------------------

_RECAL = "recalibrate with edgeseg calibrate, which writes symmetric INT8 Q/DQ with float biases"
_REEXPORT = "re-export with an opset it takes (edgeseg export --opset 17)"
_SYM = "recalibrate with edgeseg calibrate without --asymmetric (TensorRT takes symmetric INT8 only)"


def _said(model, version):
    return [(v.text, v.fix) for v in violations(model, version)]


def _int32_relus(count):
    """``count`` Relus on INT32 tensors: one refusal each on 8.5, whose Relu takes FP32, FP16, INT8."""
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"r{i - 1}"], [f"r{i}"], name=f"relu{i}")
             for i in range(count)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.INT32, [2])],
                  [helper.make_tensor_value_info(f"r{count - 1}", TensorProto.INT32, [2])])


@pytest.mark.parametrize("count,rest", [(1, ""), (2, ""), (3, " (and 1 more)"), (4, " (and 2 more)")])
def test_the_refusal_names_two_problems_counts_the_rest_and_gives_the_first_fix(tmp_path, count, rest):
    path = tmp_path / "relus.onnx"
    onnx.save(_int32_relus(count), str(path))
    said = [f"Relu 'relu{i}' works on INT32 tensor '{'x' if i == 0 else f'r{i - 1}'}', but TensorRT 8.5's Relu takes "
            f"FP32, FP16, INT8" for i in range(count)]
    with pytest.raises(TensorRTRulesError) as refused:
        require_tensorrt_parsable(path, "8.5.2")
    assert str(refused.value) == (f"relus.onnx will not parse on TensorRT 8.5.2: {'; '.join(said[:2])}{rest}; "
                                  f"export Relu on FP32 tensors.")
    assert _said(_int32_relus(count), "8.5.2") == [(text, "export Relu on FP32 tensors") for text in said]


def test_a_version_reads_major_and_minor_only():
    # TensorRT 10's early-access wheels say "10.0.0b6": only 10.0 is read (older than 10.3's table)
    assert table_for("10.0.0b6").version == "8.5"
    assert table_for("10.3.1b2").version == "10.3"


def test_opset_bounds_are_inclusive_and_the_fix_names_an_opset():
    assert _said(_relu(opset=1), "8.5.2") == []  # 8.5: "up to Opset 17", no lower bound
    assert _said(_relu(opset=17), "8.5.2") == []
    for version in ("10.3.0", "11.1.0"):
        assert _said(_relu(opset=9), version) == []  # "opset 9 to ..."
    assert _said(_relu(opset=18), "8.5.2") == [("the model's ONNX opset is 18, but TensorRT 8.5's parser takes opsets "
                                                "up to 17", _REEXPORT)]
    assert _said(_relu(opset=8), "10.3.0") == [("the model's ONNX opset is 8, but TensorRT 10.3's parser takes opsets "
                                                "9 to 20", _REEXPORT)]


def test_the_ai_onnx_domain_is_the_default_one_and_a_model_without_it_is_refused():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu", domain="ai.onnx")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    spelled = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx", 17)])
    for version in ALL_TARGETS:
        assert _said(spelled, version) == []
    foreign_only = helper.make_model(helper.make_graph([], "g", [], []),
                                     opset_imports=[helper.make_opsetid("com.microsoft", 1)])
    assert _said(foreign_only, "10.3.0") == [("the model's ONNX opset is None, but TensorRT 10.3's parser takes opsets "
                                              "9 to 20", _REEXPORT)]


def test_unsupported_and_foreign_operators_name_their_fix():
    det = _model([helper.make_node("Det", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    for version, table in (("8.5.2", "8.5"), ("10.3.0", "10.3"), ("11.1.0", "11.1")):  # unnamed: its output names it
        assert _said(det, version) == [(f"Det 'y': TensorRT {table}'s parser does not support Det",
                                        "export without Det or target a newer TensorRT")]
    assert _said(_relu(domain="com.microsoft"), "11.1.0") == [
        ("Relu 'relu' is a com.microsoft operator, which TensorRT 11.1 parses only as a plugin",
         "export it with standard ONNX operators only")]


def _layer_norm(name="ln"):
    return helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["t"], name=name, axis=-1)


def test_layer_normalization_names_the_opset_16_re_export():
    model = _model([_layer_norm()], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                   [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 8])],
                   [numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
                    numpy_helper.from_array(np.zeros(8, np.float32), "beta")])
    assert _said(model, "8.5.2") == [
        ("LayerNormalization 'ln': TensorRT 8.5's parser does not support LayerNormalization",
         "re-export it with edgeseg export --opset 16, which writes LayerNormalization as ReduceMean, Sub, Pow, Sqrt "
         "and Div (LayerNormalization became an ONNX operator in opset 17)")]


def test_operators_inside_if_bodies_are_checked():
    then_body = helper.make_graph([_layer_norm("inner_ln")], "then", [],
                                  [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 8])])
    else_body = helper.make_graph([helper.make_node("Det", ["x"], ["e"], name="inner_det")], "else", [],
                                  [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_body, else_branch=else_body)
    model = _model([node], [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
                    numpy_helper.from_array(np.zeros(8, np.float32), "beta")])
    said = _said(model, "8.5.2")
    assert [text for text, _ in said] == [  # make_node writes attributes by name: else_branch first
        "Det 'inner_det': TensorRT 8.5's parser does not support Det",
        "LayerNormalization 'inner_ln': TensorRT 8.5's parser does not support LayerNormalization"]
    assert _said(model, "10.3.0") == [("Det 'inner_det': TensorRT 10.3's parser does not support Det",
                                       "export without Det or target a newer TensorRT")]


def test_types_known_only_by_shape_inference_are_checked():
    model = _model([helper.make_node("Identity", ["x"], ["t"], name="id"),
                    helper.make_node("Relu", ["t"], ["y"], name="relu")],
                   [helper.make_tensor_value_info("x", TensorProto.INT32, [2])],
                   [helper.make_tensor_value_info("y", TensorProto.INT32, [2])])
    assert _said(model, "8.5.2") == [("Relu 'relu' works on INT32 tensor 't', but TensorRT 8.5's Relu takes FP32, "
                                      "FP16, INT8", "export Relu on FP32 tensors")]


def test_fp16_bf16_fp8_and_fp4_are_named_as_operators_md_names_them():
    assert _said(_relu(TensorProto.FLOAT16), "8.5.2") == []
    assert _said(_relu(TensorProto.BFLOAT16), "10.3.0") == []
    assert _said(_relu(TensorProto.BFLOAT16), "8.5.2") == [
        ("Relu 'relu' works on BF16 tensor 'x', but TensorRT 8.5's Relu takes FP32, FP16, INT8",
         "export Relu on FP32 tensors")]

    def dequantize(elem_type, opset):
        return _model([helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")],
                      [helper.make_tensor_value_info("q", elem_type, [2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                      [numpy_helper.from_array(np.array(0.5, np.float32), "s")], opset=opset)

    fp8, fp4 = dequantize(TensorProto.FLOAT8E4M3FN, 19), dequantize(TensorProto.FLOAT4E2M1, 23)
    assert _said(fp8, "8.5.2") == [("the model's ONNX opset is 19, but TensorRT 8.5's parser takes opsets up to 17",
                                    _REEXPORT),
                                   ("DequantizeLinear 'dq' reads FP8 tensor 'q', but TensorRT 8.5 dequantizes only "
                                    "INT8", _RECAL)]
    assert _said(fp8, "10.3.0") == _said(fp8, "11.1.0") == _said(fp4, "11.1.0") == []
    assert _said(fp4, "10.3.0")[1:] == [("DequantizeLinear 'dq' reads FP4 tensor 'q', but TensorRT 10.3 dequantizes "
                                         "only INT8, FP8, INT4", _RECAL)]


def _cast(to, elem_type=TensorProto.FLOAT):
    return _model([helper.make_node("Cast", ["x"], ["y"], name="cast", to=to)],
                  [helper.make_tensor_value_info("x", elem_type, [2])],
                  [helper.make_tensor_value_info("y", to, [2])])


def test_cast_targets_follow_each_versions_cast_row():
    # Cast: 8.5 "FP32, FP16, INT32, INT8, BOOL"; 10.x "FP32, FP16, BF16, INT32, INT64, UINT8, BOOL"
    assert _said(_cast(TensorProto.UINT8), "8.5.2") == [
        ("Cast 'cast' casts to UINT8, which TensorRT 8.5's Cast cannot make (it makes FP32, FP16, INT32, INT8, BOOL)",
         "export without the UINT8 cast (edgeseg export --argmax --argmax-dtype int32)")]
    assert _said(_cast(TensorProto.INT8), "10.3.0") == [
        ("Cast 'cast' casts to INT8, which TensorRT 10.3's Cast cannot make (it makes FP32, FP16, BF16, INT32, INT64, "
         "UINT8, BOOL)", "export without the INT8 cast")]
    for to in (TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL):  # INT64 is INT32 on 8.5
        for version in ALL_TARGETS:
            assert _said(_cast(to), version) == [], (to, version)
    assert _said(_cast(TensorProto.UINT8), "10.3.0") == []


def test_constant_of_shape_is_typed_by_the_value_it_makes():
    fill = _model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill",
                                    value=helper.make_tensor("v", TensorProto.UINT8, [1], [0]))],
                  [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                  [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
    assert _said(fill, "10.3.0") == [("ConstantOfShape 'fill' works on UINT8 tensor 'y', but TensorRT 10.3's "
                                      "ConstantOfShape takes FP32, FP16, BF16, INT32, INT64, BOOL",
                                      "export ConstantOfShape on FP32 tensors")]


def _dq(data_type, data, zero_point=None, name="w_dq", extra_init=()):
    """DequantizeLinear of initializer ``data`` (of ``data_type``) with scale 0.1 and an optional zero point."""
    init = [numpy_helper.from_array(np.array(data, data_type), "w_quantized"),
            numpy_helper.from_array(np.array(0.1, np.float32), "w_scale")] + list(extra_init)
    inputs = ["w_quantized", "w_scale"] + ([zero_point] if zero_point else [])
    return _model([helper.make_node("DequantizeLinear", inputs, ["y"], name=name)], [],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], init)


def test_dequantize_linear_of_the_wrong_type_says_why_and_what_to_do():
    for version, table, takes in (("8.5.2", "8.5", "INT8"), ("10.3.0", "10.3", "INT8, FP8, INT4"),
                                  ("11.1.0", "11.1", "INT8, FP8, FP4, INT4")):
        assert _said(_qdq_conv(bias="int32"), version) == [
            (f"DequantizeLinear 'bias_dq' reads INT32 tensor 'conv.bias_quantized' (a bias quantized to INT32, as ONNX "
             f"Runtime's QuantizeBias writes it, where TensorRT wants a float bias to fuse into the INT8 convolution), "
             f"but TensorRT {table} dequantizes only {takes}", _RECAL)]
        zero = [numpy_helper.from_array(np.array(128, np.uint8), "w_zero_point")]
        assert _said(_dq(np.uint8, [1, 2], "w_zero_point", extra_init=zero), version) == [
            (f"DequantizeLinear 'w_dq' reads UINT8 tensor 'w_quantized' (ONNX Runtime's asymmetric layout), but "
             f"TensorRT {table} dequantizes only {takes}", _SYM)]
        assert _said(_dq(np.int16, [1, 2]), version) == [
            (f"DequantizeLinear 'w_dq' reads INT16 tensor 'w_quantized', but TensorRT {table} dequantizes only "
             f"{takes}", _RECAL)]


def test_zero_points_of_the_wrong_type_or_nonzero_are_refused():
    # a DQ's zero point has its input's type (NvInfer.h); a Q's is one of the types TensorRT dequantizes
    fp8_zero = [helper.make_tensor("w_zero_point", TensorProto.FLOAT8E4M3FN, [], [0.0])]
    assert _said(_dq(np.int8, [1, 2], "w_zero_point", extra_init=fp8_zero), "10.3.0") == [
        ("DequantizeLinear 'w_dq' has zero point 'w_zero_point' of type FP8, but TensorRT 10.3 takes INT8 zero points "
         "here", _SYM)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    uint8_zero = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.uint8), "z")]
    q = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="x_q")], [x],
               [helper.make_tensor_value_info("q", TensorProto.UINT8, [2])], uint8_zero)
    assert _said(q, "10.3.0") == [
        ("QuantizeLinear 'x_q' has zero point 'z' of type UINT8 (ONNX Runtime's asymmetric layout), but TensorRT 10.3 "
         "takes INT8 or FP8 or INT4 zero points here", _SYM)]
    # a zero point or a scale from a Constant node is read like an initializer
    constant = helper.make_node("Constant", [], ["z"], name="zero",
                                value=numpy_helper.from_array(np.array(3, np.int8), "zv"))
    q = _model([constant, helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="x_q")], [x],
               [helper.make_tensor_value_info("q", TensorProto.INT8, [2])],
               [numpy_helper.from_array(np.array(0.1, np.float32), "s")])
    assert _said(q, "8.5.2") == [  # 10.x's Constant row has no INT8
        ("QuantizeLinear 'x_q' has nonzero zero point 'z' (asymmetric quantization), but TensorRT takes "
         "symmetric quantization only (zero points of 0)", _SYM)]
    constant = helper.make_node("Constant", [], ["s"], name="scale",
                                value=numpy_helper.from_array(np.array(-0.5, np.float32), "sv"))
    q = _model([constant, helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="x_q")], [x],
               [helper.make_tensor_value_info("q", TensorProto.INT8, [2])],
               [numpy_helper.from_array(np.array(0, np.int8), "z")])
    for version in ALL_TARGETS:
        assert _said(q, version) == [
            ("QuantizeLinear 'x_q' has scale 's' with 1 value(s) that are not positive and finite (such as -0.5), but "
             "TensorRT takes positive scales only", _RECAL)]


def test_a_zero_point_beside_data_of_unknown_type_is_held_to_the_quantized_types():
    untyped = helper.make_value_info("q", onnx.TypeProto())
    model = _model([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")], [untyped],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                    numpy_helper.from_array(np.array(0, np.int16), "z")])
    assert _said(model, "10.3.0") == [("DequantizeLinear 'dq' has zero point 'z' of type INT16, but TensorRT 10.3 "
                                       "takes INT8 or FP8 or INT4 zero points here", _SYM)]


def test_tensorrt_8_5s_missing_zero_point_names_the_fix():
    assert _said(_qdq_conv(zero_point=False), "8.5.2") == [
        ("DequantizeLinear 'w_dq' has no zero point, which TensorRT 8.5's parser requires", _RECAL)]


@pytest.mark.parametrize("w_scale,said", [
    ((0.1, 0.0), "with 1 value(s) that are not positive and finite (such as 0.0)"),
    ((-0.5, float("inf")), "with 2 value(s) that are not positive and finite (such as -0.5)"),
])
def test_scales_that_are_zero_negative_or_infinite_are_refused(w_scale, said):
    for version in ALL_TARGETS:
        assert _said(_qdq_conv(w_scale=w_scale), version) == [
            (f"DequantizeLinear 'w_dq' has scale 'w_scale' {said}, but TensorRT takes positive scales only", _RECAL)]


def test_an_empty_scale_is_refused():
    model = _model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="x_q", axis=1)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                   [helper.make_tensor_value_info("q", TensorProto.INT8, None)],
                   [numpy_helper.from_array(np.zeros(0, np.float32), "s")])
    assert _said(model, "10.3.0") == [
        ("QuantizeLinear 'x_q' has scale 's' with no value(s) that are not positive and finite, but TensorRT takes "
         "positive scales only", _RECAL),
        ("QuantizeLinear 'x_q' has 0 per-channel scales in 's' but its input 'x' has 2 along axis 1", _RECAL)]


def test_each_broken_per_channel_rule_names_its_fix():
    for change, text in (
            ({"w_zero": (0,)}, "has 2 scale(s) but 1 zero point(s)"),
            ({"axis": 4}, "has axis 4, outside [-4, 3] for its 4-D input 'w_quantized'"),
            ({"axis": -5}, "has axis -5, outside [-4, 3] for its 4-D input 'w_quantized'"),
            ({"axis": None}, "has a per-channel scale 'w_scale' but no axis: ONNX reads it along axis 1, TensorRT's "
                             "parser along axis 0"),
            ({"w_scale": (0.1, 0.2, 0.3), "w_zero": (0, 0, 0)}, "has 3 per-channel scales in 'w_scale' but its input "
                                                                "'w_quantized' has 2 along axis 0")):
        for version in ALL_TARGETS:
            assert _said(_qdq_conv(**change), version) == [(f"DequantizeLinear 'w_dq' {text}", _RECAL)], change
    for version, table in (("8.5.2", "8.5"), ("10.3.0", "10.3"), ("11.1.0", "11.1")):
        assert _said(_qdq_conv(w_scale=((0.1,), (0.2,)), w_zero=((0,), (0,))), version) == [
            (f"DequantizeLinear 'w_dq' has a 2-D scale 'w_scale', but TensorRT {table} takes a scalar or 1-D scale "
             f"here", _RECAL)]
    for version in ALL_TARGETS:  # axis -4 is axis 0 of a 4-D weight
        assert _said(_qdq_conv(axis=-4), version) == []


def _quantize(x, scale, axis=None, zero_point=None, out=TensorProto.INT8):
    """QuantizeLinear of graph input ``x`` with initializer (or input) ``scale``."""
    inputs = [x.name, scale.name] + ([zero_point.name] if zero_point is not None else [])
    node = helper.make_node("QuantizeLinear", inputs, ["q"], name="x_q", **({} if axis is None else {"axis": axis}))
    graph_inputs = [x] + [t for t in (scale, zero_point) if isinstance(t, onnx.ValueInfoProto)]
    init = [t for t in (scale, zero_point) if isinstance(t, onnx.TensorProto)]
    return _model([node], graph_inputs, [helper.make_tensor_value_info("q", out, None)], init)


def test_block_scales_are_refused_for_int8_on_every_target_and_for_anything_on_8_5():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    blocks = numpy_helper.from_array(np.full((4, 2), 0.1, np.float32), "s")
    model = _quantize(x, blocks, axis=1, zero_point=numpy_helper.from_array(np.zeros((4, 2), np.int8), "z"))
    assert _said(model, "8.5.2") == [("QuantizeLinear 'x_q' has a 2-D scale 's', but TensorRT 8.5 takes a scalar or "
                                      "1-D scale here", _RECAL)]
    assert _said(model, "10.3.0") == _said(model, "11.1.0") == []  # its input is FP32: INT4/FP8 block quantization


def test_per_channel_scales_are_checked_against_the_inferred_shape_of_an_activation():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    model = _quantize(x, numpy_helper.from_array(np.full(3, 0.1, np.float32), "s"), axis=1)
    for version in ("10.3.0", "11.1.0"):
        assert _said(model, version) == [("QuantizeLinear 'x_q' has 3 per-channel scales in 's' but its input 'x' has "
                                          "2 along axis 1", _RECAL)]


def test_scales_of_unknown_length_or_on_inputs_of_unknown_shape_are_not_guessed():
    dynamic_scale = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n"])
    model = _quantize(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]), dynamic_scale)
    for version in ("10.3.0", "11.1.0"):
        assert _said(model, version) == []
    shapeless = _quantize(helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                          numpy_helper.from_array(np.full(3, 0.1, np.float32), "s"), axis=1)
    for version in ("10.3.0", "11.1.0"):
        assert _said(shapeless, version) == []


def test_types_are_named_on_an_onnx_without_fp4(monkeypatch):
    """onnx before 1.18 has no FLOAT4E2M1 (setup.cfg takes onnx>=1.14): every other type keeps its name."""
    import types

    old = types.SimpleNamespace(**{name: getattr(TensorProto, name) for name in
                                   ("FLOAT", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "INT8", "INT32", "INT64")})
    monkeypatch.setattr(onnx, "TensorProto", old)
    assert check_for_tensorrt(_relu(TensorProto.FLOAT), "8.5.2") == []
    assert check_for_tensorrt(_relu(TensorProto.BFLOAT16), "8.5.2") == [
        "Relu 'relu' works on BF16 tensor 'x', but TensorRT 8.5's Relu takes FP32, FP16, INT8"]


def test_a_scale_and_zero_point_of_symbolic_length_are_not_a_mismatch():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    model = _quantize(x, helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n"]), axis=1,
                      zero_point=numpy_helper.from_array(np.zeros(2, np.int8), "z"))
    for version in ("10.3.0", "11.1.0"):
        assert _said(model, version) == []  # 'n' may well be 2: unknown is not a refusal
    both_known = _quantize(x, numpy_helper.from_array(np.full(2, 0.1, np.float32), "s"), axis=1,
                           zero_point=numpy_helper.from_array(np.zeros(3, np.int8), "z"))
    assert ("QuantizeLinear 'x_q' has 2 scale(s) but 3 zero point(s)", _RECAL) in _said(both_known, "10.3.0")
