"""export --argmax: the class map comes out of the graph, with the logits model's accuracy exactly."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeseg.errors import ConfigError
from edgeseg.exporting.argmax import append_class_map, check_dtype, class_map_tail, strip_class_map
from edgeseg.runtime.loader import describe, open_runner
from edgeseg.runtime.outputs import class_map_dtype, to_class_map
from edgeseg.sidecar import model_output, read_sidecar


def test_class_map_model_keeps_the_miou_exactly(tiny_onnx, tiny_class_map_onnx, tiny_data):
    from edgeseg.benchmark.api import eval as evaluate

    logits, classes = evaluate(str(tiny_onnx), str(tiny_data)), evaluate(str(tiny_class_map_onnx), str(tiny_data))
    assert classes["confusion"] == logits["confusion"]
    assert classes["miou"] == logits["miou"] and classes["per_class_iou"] == logits["per_class_iou"]


def test_the_graph_ends_in_argmax_and_a_uint8_cast_and_the_sidecar_says_so(tiny_class_map_onnx):
    model = onnx.load(str(tiny_class_map_onnx))
    assert [n.op_type for n in model.graph.node][-2:] == ["ArgMax", "Cast"]
    output = model.graph.output[0]
    assert output.type.tensor_type.elem_type == onnx.TensorProto.UINT8 and len(output.type.tensor_type.shape.dim) == 3
    meta = read_sidecar(tiny_class_map_onnx)
    assert model_output(meta) == {"kind": "class_map", "dtype": "uint8"}
    assert meta["parity"]["class_map_agreement"] == 100.0
    assert model_output({"onnx": {"opset": 17}}) == {"kind": "logits", "dtype": "float32"}


def test_runner_returns_the_class_map_in_its_own_dtype(tiny_onnx, tiny_class_map_onnx):
    batch = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with open_runner(describe(tiny_onnx)) as runner:
        expected = to_class_map(runner.infer(batch).copy())
    with open_runner(describe(tiny_class_map_onnx)) as runner:
        got = runner.infer(batch)
    assert got.dtype == np.uint8 and got.shape == (2, 64, 64)
    np.testing.assert_array_equal(got, expected)
    assert to_class_map(got) is got  # a uint8 class map is passed through without a copy


def test_int32_class_map_for_tensorrt_8_5(tiny_student, tiny_onnx, tiny_data, tmp_path):
    from edgeseg.exporting.api import export

    path = tmp_path / "int32.onnx"
    export(str(tiny_student), str(path), data=str(tiny_data), argmax=True, argmax_dtype="int32", verify_images=2)
    model = onnx.load(str(path))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert model_output(read_sidecar(path)) == {"kind": "class_map", "dtype": "int32"}
    batch = np.random.default_rng(1).normal(size=(1, 3, 64, 64)).astype(np.float32)
    with open_runner(describe(path)) as runner:
        got = runner.infer(batch)
    with open_runner(describe(tiny_onnx)) as runner:
        expected = runner.infer(batch).argmax(1)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(to_class_map(got, 8), expected)
    assert to_class_map(got, 8).dtype == np.uint8


def test_argmax_options_are_checked(tiny_student, tmp_path):
    from edgeseg.exporting.api import export

    with pytest.raises(ConfigError, match="only with --argmax"):
        export(str(tiny_student), str(tmp_path / "x.onnx"), argmax_dtype="int32")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ConfigError, match="int32"):
        check_dtype("uint8", 300)
    with pytest.raises(ConfigError, match="uint8"):
        check_dtype("int64", 10)
    assert class_map_dtype(255) == np.uint8 and class_map_dtype(256) == np.uint16


def test_more_than_255_classes_give_a_uint16_map():
    logits = np.random.default_rng(2).normal(size=(1, 300, 4, 5)).astype(np.float32)
    classes = to_class_map(logits)
    assert classes.dtype == np.uint16
    np.testing.assert_array_equal(classes, logits.argmax(1))


def test_strip_and_append_round_trip(tiny_class_map_onnx):
    model = onnx.load(str(tiny_class_map_onnx))
    assert class_map_tail(model) == "uint8"
    logits = strip_class_map(model)
    assert class_map_tail(logits) is None
    assert logits.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    with pytest.raises(ConfigError, match="not NxCxHxW float logits"):
        append_class_map(onnx.load(str(tiny_class_map_onnx)), "uint8")  # already has the tail
    assert class_map_tail(append_class_map(logits, "int32")) == "int32"


def test_calibrate_keeps_the_tail_in_float_and_measures_the_logits(tiny_onnx, tiny_class_map_onnx, tiny_data, tmp_path):
    """The Q/DQ model of a class-map model is the logits model's Q/DQ model plus the same float tail."""
    from edgeseg.benchmark.api import eval as evaluate
    from edgeseg.quant.api import calibrate

    images = str(tiny_data / "train" / "images")
    plain = calibrate(str(tiny_onnx), images, str(tmp_path / "plain.int8.onnx"), method="minmax", num=4,
                      bias_correction=False)
    classes = calibrate(str(tiny_class_map_onnx), images, str(tmp_path / "classes.int8.onnx"), method="minmax", num=4,
                        bias_correction=False)
    model = onnx.load(str(tmp_path / "classes.int8.onnx"))
    producers = {out: node for node in model.graph.node for out in node.output}
    assert [n.op_type for n in model.graph.node][-2:] == ["ArgMax", "Cast"]
    argmax = next(n for n in model.graph.node if n.op_type == "ArgMax")
    assert producers[argmax.input[0]].op_type not in ("DequantizeLinear", "QuantizeLinear")
    assert model_output(classes) == {"kind": "class_map", "dtype": "uint8"} and model_output(plain)["kind"] == "logits"
    assert classes["quantization"]["float_nodes"] == plain["quantization"]["float_nodes"]
    plain_eval = evaluate(str(tmp_path / "plain.int8.onnx"), str(tiny_data))
    classes_eval = evaluate(str(tmp_path / "classes.int8.onnx"), str(tiny_data))
    assert classes_eval["confusion"] == plain_eval["confusion"]


def test_bench_row_says_the_output_kind(tiny_class_map_onnx, tiny_onnx, tiny_data, tmp_path):
    from edgeseg.benchmark.api import bench

    out = tmp_path / "bench.json"
    bench([str(tiny_class_map_onnx)], str(tiny_data), iters=2, warmup=1, json_out=str(out), show=False)
    row = json.loads(out.read_text())
    from edgeseg.benchmark.api import eval as evaluate

    # bench scores the class map exactly as eval scores the logits model it came from
    assert row["output"] == "class_map" and row["miou"] == evaluate(str(tiny_onnx), str(tiny_data))["miou"]


def test_report_measures_a_class_map_stage_like_its_logits_stage(tiny_onnx, tiny_class_map_onnx, tiny_data):
    from edgeseg.data.dataset import resolve_split
    from edgeseg.report.measure import measure_stages

    measured = measure_stages({"logits": tiny_onnx, "classes": tiny_class_map_onnx}, resolve_split(tiny_data, "val"),
                              rounds=1, iters_per_round=1, warmup=1, mask_images=2)
    logits, classes = measured["rows"]
    assert classes["miou"] == logits["miou"] and classes["output"] == "class_map" and logits["output"] == "logits"
    for a, b in zip(measured["masks"]["predictions"]["logits"], measured["masks"]["predictions"]["classes"]):
        np.testing.assert_array_equal(a, b)


def test_build_engine_keeps_the_class_map_and_says_so(tiny_class_map_onnx, tiny_onnx, tiny_data, tmp_path):
    """Without TensorRT here, build-engine writes the ONNX Runtime artifact; its output and sidecar stay a class map."""
    from edgeseg.benchmark.api import eval as evaluate
    from edgeseg.engine.api import build_engine

    meta = build_engine(str(tiny_class_map_onnx), str(tmp_path / "classes.ort.onnx"), backend="onnxruntime")
    built = Path(tmp_path / meta["artifact"])
    assert model_output(read_sidecar(built)) == {"kind": "class_map", "dtype": "uint8"}
    assert evaluate(str(built), str(tiny_data))["confusion"] == evaluate(str(tiny_onnx), str(tiny_data))["confusion"]


def test_info_says_which_output_a_model_has(tiny_onnx, tiny_class_map_onnx, tmp_path):
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    assert "output        class map, uint8" in CliRunner().invoke(cli, ["info", str(tiny_class_map_onnx)]).output
    assert "output        logits" in CliRunner().invoke(cli, ["info", str(tiny_onnx)]).output
    import shutil

    foreign = tmp_path / "foreign-class-map.onnx"  # the same graph with no sidecar: read from the graph
    shutil.copy(tiny_class_map_onnx, foreign)
    assert "output a class map (argmax in the graph)" in " ".join(
        CliRunner().invoke(cli, ["info", str(foreign)]).output.split())


def test_keepdims_argmax_is_a_class_map_too():
    """Other exporters write ArgMax(keepdims=1): an integer Nx1xHxW output is classes, not one-class logits."""
    from edgeseg.runtime.outputs import CLASS_MAP, LOGITS, output_kind, to_class_map

    classes = np.array([[[[0, 3], [2, 1]]]], dtype=np.int64)
    assert output_kind(classes) == CLASS_MAP and output_kind(classes.astype(np.float32)) == LOGITS
    assert to_class_map(classes).tolist() == [[[0, 3], [2, 1]]]


def _graph(inputs, outputs, nodes):
    from onnx import helper

    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case, class_map, cannot", [
    ("argmax then squeeze", True, None),
    ("keepdims argmax", True, None),
    ("topk values (float)", False, None),
    ("two inputs", False, "takes 2 inputs"),
    ("nhwc", False, "channels in dimension 1"),
])
def test_info_reads_the_output_form_and_refusals_from_the_graph(case, class_map, cannot, tmp_path):
    """The first output's dtype and rank decide, as the runtime decides; graphs edgeseg cannot run are named."""
    from onnx import TensorProto, helper

    from edgeseg.foreign_onnx import graph_summary

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    if case == "argmax then squeeze":
        model = _graph([x], [helper.make_tensor_value_info("c", TensorProto.INT64, ["n", 8, 8])],
                       [helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=1),
                        helper.make_node("Squeeze", ["a", "k"], ["c"])])
        model.graph.initializer.append(helper.make_tensor("k", TensorProto.INT64, [1], [1]))
    elif case == "keepdims argmax":
        model = _graph([x], [helper.make_tensor_value_info("c", TensorProto.INT64, ["n", 1, 8, 8])],
                       [helper.make_node("ArgMax", ["x"], ["c"], axis=1, keepdims=1)])
    elif case == "topk values (float)":
        model = _graph([x], [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["n", 1, 8, 8])],
                       [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)])
        model.graph.initializer.append(helper.make_tensor("k", TensorProto.INT64, [1], [1]))
    elif case == "two inputs":
        model = _graph([x, helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 8, 8])],
                       [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 3, 8, 8])],
                       [helper.make_node("Add", ["x", "y"], ["z"])])
    else:
        nhwc = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 8, 3])
        model = _graph([nhwc], [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 8, 8, 3])],
                       [helper.make_node("Relu", ["x"], ["z"])])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    summary = graph_summary(path)
    assert summary["class_map_output"] == class_map
    assert (summary["cannot_run"] is None) if cannot is None else (cannot in summary["cannot_run"])
    if cannot:
        assert not summary["verbs_need"]


def test_a_foreign_keepdims_class_map_asks_for_the_class_count(tmp_path):
    """ArgMax(keepdims=1) outputs Nx1xHxW integers: 1 is not its class count, so --num-classes is asked for."""
    from onnx import TensorProto, helper

    from edgeseg.foreign_onnx import describe_onnx
    from edgeseg.spec import ModelFacts

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    model = _graph([x], [helper.make_tensor_value_info("c", TensorProto.INT64, [1, 1, 8, 8])],
                   [helper.make_node("ArgMax", ["x"], ["c"], axis=1, keepdims=1)])
    path = tmp_path / "keepdims.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConfigError, match=r"give facts=ModelFacts\(num_classes=N\)"):  # Python's argument
        describe_onnx(path)
    assert describe_onnx(path, ModelFacts(num_classes=3))["model"]["num_classes"] == 3