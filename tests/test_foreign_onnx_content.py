"""edgeseg/foreign_onnx.py on graphs written here node by node: what a graph says, exactly.

The reference is each graph as the test builds it (its producer, opsets, shapes, types,
weights and operators). Written after ``make mutate`` found these untested
(benchmarks/results/mutation/foreign_onnx.md). No model is trained: each test takes
milliseconds.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.errors import ConfigError
from edgeseg.foreign_onnx import adopt_onnx, describe_onnx, graph_summary
from edgeseg.spec import ModelFacts


def conv_model(input_dims, output_dims=None, *, producer=("mytool", "1.2"), opsets=(("", 13),),
               output_type=TensorProto.FLOAT, classes=5, extra_nodes=(), extra_inits=()):
    """x -> Conv(3 -> classes, 1x1) -> y, with the dims, producer and opsets given."""
    weight = numpy_helper.from_array(np.arange(3 * classes, dtype=np.float32).reshape(classes, 3, 1, 1), "w")
    bias = numpy_helper.from_array(np.zeros(classes, dtype=np.float32), "b")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)
    y = helper.make_tensor_value_info("y", output_type, output_dims if output_dims is not None else
                                      [input_dims[0], classes, *input_dims[2:]])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y" if not extra_nodes else "conv"])] + list(extra_nodes)
    graph = helper.make_graph(nodes, "g", [x], [y], [weight, bias, *extra_inits])
    model = helper.make_model(graph, producer_name=producer[0], producer_version=producer[1],
                              opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets])
    model.ir_version = 8
    return model


def save(model, path):
    onnx.save(model, str(path))
    return path


def test_graph_summary_says_what_the_graph_holds(tmp_path):
    path = save(conv_model([1, 3, "h", 16], opsets=(("com.microsoft", 1), ("", 13), ("ai.onnx.ml", 3))), tmp_path / "m.onnx")
    summary = graph_summary(path)
    assert summary == {
        "artifact": "m.onnx", "kind": "onnx, no sidecar: made by another tool", "producer": "mytool 1.2",
        "opset": 13, "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 3, "h", 16]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 5, "h", 16]}],
        "params": 20, "nodes": 1, "operators": {"Conv": 1}, "quantized": False, "class_map_output": False,
        "external_data": False, "cannot_run": None,
        "verbs_need": ["--input-size HEIGHTxWIDTH (the input size is dynamic)",
                       "--mean/--std if it was not trained on ImageNet's normalisation"]}


def test_a_producerless_graph_in_the_ai_onnx_domain(tmp_path):
    model = conv_model([1, 3, 8, 8], producer=("", ""), opsets=(("ai.onnx", 17),))
    model.graph.output[0].type.tensor_type.elem_type = 0  # some exporters leave the output type undefined
    model.graph.output[0].type.tensor_type.shape.dim[1].Clear()  # neither a value nor a name
    summary = graph_summary(save(model, tmp_path / "m.onnx"))
    assert summary["producer"] == "unknown" and summary["opset"] == 17
    assert summary["outputs"] == [{"name": "y", "dtype": "?", "shape": [1, "?", 8, 8]}]
    assert summary["verbs_need"] == ["--mean/--std if it was not trained on ImageNet's normalisation"]  # static size


@pytest.mark.parametrize("dims", [[1, 3, 0, 8], [1, 3, "h", 8], [1, 3, 8, "w"]])
def test_any_unsized_spatial_dimension_asks_for_the_input_size(tmp_path, dims):
    summary = graph_summary(save(conv_model(dims, [1, 5, 8, 8]), tmp_path / "m.onnx"))
    assert summary["verbs_need"][0] == "--input-size HEIGHTxWIDTH (the input size is dynamic)"


def test_a_one_pixel_input_is_a_static_size(tmp_path):
    summary = graph_summary(save(conv_model([1, 3, 1, 1]), tmp_path / "m.onnx"))
    assert summary["verbs_need"] == ["--mean/--std if it was not trained on ImageNet's normalisation"]


def test_a_zero_dimension_is_read_as_unknown_not_as_zero(tmp_path):
    path = save(conv_model([1, 3, 0, 0], [1, 5, 0, 0]), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="dynamic input size"):
        describe_onnx(path)
    assert describe_onnx(path, ModelFacts(input_size=(8, 8)))["input"]["height"] == 8


def _qdq(kind):
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "z")
    node = helper.make_node(kind, ["conv", "s", "z"], ["y"])
    return node, (scale, zero)


@pytest.mark.parametrize("kind", ["QuantizeLinear", "DequantizeLinear"])
def test_one_kind_of_qdq_node_is_enough_to_be_quantised(tmp_path, kind):
    node, inits = _qdq(kind)
    out_type = TensorProto.INT8 if kind == "QuantizeLinear" else TensorProto.FLOAT
    model = conv_model([1, 3, 8, 8], [1, 5, 8, 8], output_type=out_type, extra_nodes=[node], extra_inits=inits)
    assert graph_summary(save(model, tmp_path / "m.onnx"))["quantized"] is True


def test_weights_stored_outside_the_file_are_reported(tmp_path):
    model = conv_model([1, 3, 8, 8])
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.weights", size_threshold=0)
    assert graph_summary(tmp_path / "m.onnx")["external_data"] is True


def test_only_integer_maps_with_one_channel_or_none_are_class_maps(tmp_path):
    four = graph_summary(save(conv_model([1, 3, 8, 8], [1, 5, 8, 8], output_type=TensorProto.INT64), tmp_path / "a.onnx"))
    one = graph_summary(save(conv_model([1, 3, 8, 8], [1, 1, 8, 8], output_type=TensorProto.INT64), tmp_path / "b.onnx"))
    assert four["class_map_output"] is False and one["class_map_output"] is True


def test_why_a_graph_cannot_run_is_said_in_words(tmp_path):
    model = conv_model([1, 3, 8, 8])
    model.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 8, 8]))
    assert graph_summary(save(model, tmp_path / "two.onnx"))["cannot_run"] == \
        "it takes 2 inputs (x, mask), not one image batch"
    model = conv_model([1, 3, 8, 8])
    del model.graph.output[:]
    assert graph_summary(save(model, tmp_path / "none.onnx"))["cannot_run"] == "it has no outputs"


def test_a_symbolic_class_count_is_read_by_one_inference_at_batch_one(tmp_path):
    # batch fixed to 1 and every output dim symbolic: the count is read by running a 1-image batch
    path = save(conv_model([1, 3, "h", "w"], ["n", "c", "h", "w"], classes=7), tmp_path / "m.onnx")
    assert describe_onnx(path, ModelFacts(input_size=(8, 8)))["model"]["num_classes"] == 7


def test_a_rank_three_float_output_gives_no_class_count(tmp_path):
    squeeze_axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    reduce = helper.make_node("ReduceMax", ["conv"], ["y"], keepdims=0, axes=[1])
    model = conv_model([1, 3, "h", "w"], ["n", "h", "w"], extra_nodes=[reduce], extra_inits=[squeeze_axes],
                       opsets=(("", 13),))
    path = save(model, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"class count .* cannot be read from its output"):
        describe_onnx(path, ModelFacts(input_size=(8, 8)))


def test_adopting_writes_the_sidecar_the_graph_and_facts_describe(tmp_path, monkeypatch):
    import edgeseg.console

    said = []
    monkeypatch.setattr(edgeseg.console, "say", said.append)
    path = save(conv_model([1, 3, 8, 8], classes=4), tmp_path / "m.onnx")
    written = adopt_onnx(path, ModelFacts(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    on_disk = json.loads((tmp_path / "m.onnx.json").read_text())
    assert on_disk == written
    assert {k: on_disk[k] for k in ("artifact", "kind", "stage", "precision")} == \
        {"artifact": "m.onnx", "kind": "onnx", "stage": "adopt", "precision": "fp32"}
    assert on_disk["input"] == {"height": 8, "width": 8, "mean": [127.5] * 3, "std": [63.75] * 3, "color": "RGB"}
    assert on_disk["dataset"]["num_classes"] == 4 and on_disk["model"] == {"arch": "onnx", "num_classes": 4}
    assert on_disk["onnx"] == {"opset": 13, "input": "x", "output": "y", "dynamic_batch": False,
                               "output_kind": "logits", "output_dtype": "float32"}
    assert on_disk["source"]["format"] == "ONNX from mytool"
    assert said == ["Recording what is known about m.onnx in m.onnx.json, so later verbs need not be told again"]
    # a second adoption reads the sidecar it finds and writes nothing
    (tmp_path / "m.onnx.json").write_text(json.dumps(dict(on_disk, note="kept")))
    assert adopt_onnx(path, ModelFacts())["note"] == "kept" and len(said) == 1


def test_describe_onnx_is_the_sidecar_a_user_would_have_written(tmp_path):
    from edgeseg.spec import DatasetInfo

    path = save(conv_model([1, 3, 8, 12], classes=3, producer=("", "")), tmp_path / "m.onnx")
    dataset = DatasetInfo(num_classes=3, classes=("road", "car", "sky"), name="mine")
    meta = describe_onnx(path, ModelFacts(arch="my-net", dataset=dataset))
    assert meta == {
        "artifact": "m.onnx", "kind": "onnx",
        "input": {"height": 8, "width": 12, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                  "color": "RGB"},
        "dataset": dataset.to_dict(), "model": {"arch": "my-net", "num_classes": 3}, "precision": "fp32",
        "onnx": {"opset": 13, "input": "x", "output": "y", "dynamic_batch": False, "output_kind": "logits",
                 "output_dtype": "float32"},
        "source": {"file": "m.onnx", "format": "ONNX from another tool", "given": {"arch": "my-net"}}}


@pytest.mark.parametrize("kind", ["QuantizeLinear", "DequantizeLinear"])
def test_a_graph_with_qdq_is_described_as_int8(tmp_path, kind):
    node, inits = _qdq(kind)
    out_type = TensorProto.INT8 if kind == "QuantizeLinear" else TensorProto.FLOAT
    model = conv_model([1, 3, 8, 8], [1, 5, 8, 8], output_type=out_type, extra_nodes=[node], extra_inits=inits,
                       opsets=(("ai.onnx", 13),))
    meta = describe_onnx(save(model, tmp_path / "m.onnx"), ModelFacts(num_classes=5))  # an INT8 output names none
    assert meta["precision"] == "int8" and meta["onnx"]["opset"] == 13


def test_a_class_map_output_takes_its_count_from_the_facts(tmp_path):
    from edgeseg.errors import speak_to_cli
    from edgeseg.spec import DatasetInfo

    argmax = helper.make_node("ArgMax", ["conv"], ["y"], axis=1, keepdims=0)
    path = save(conv_model([1, 3, 8, 8], [1, 8, 8], output_type=TensorProto.INT64, extra_nodes=[argmax]),
                tmp_path / "m.onnx")
    with pytest.raises(ConfigError) as python:
        describe_onnx(path)
    assert str(python.value) == (f"The class count of {path} cannot be read from its output; give "
                                 f"facts=ModelFacts(num_classes=N).")
    speak_to_cli(True)
    try:
        with pytest.raises(ConfigError) as cli:
            describe_onnx(path)
    finally:
        speak_to_cli(False)
    assert str(cli.value).endswith("cannot be read from its output; give --num-classes.")
    meta = describe_onnx(path, ModelFacts(dataset=DatasetInfo(num_classes=5)))
    assert meta["model"]["num_classes"] == 5
    assert (meta["onnx"]["output_kind"], meta["onnx"]["output_dtype"]) == ("class_map", "int64")  # what predict says


def test_facts_that_contradict_the_graph_are_refused_in_one_sentence(tmp_path):
    from edgeseg.errors import InputFileError, speak_to_cli

    path = save(conv_model([1, 3, 8, 12], classes=5), tmp_path / "m.onnx")
    with pytest.raises(ConfigError) as size:
        describe_onnx(path, ModelFacts(input_size=(16, 8)))
    assert str(size.value) == (f"{path} is fixed to 8x12 input but input_size=(16, 8) was given; drop it or "
                               f"re-export the model at that size.")
    with pytest.raises(ConfigError) as classes:
        describe_onnx(path, ModelFacts(num_classes=4))
    assert str(classes.value) == f"{path} outputs 5 classes but num_classes=4 was given; drop it or check the model."
    speak_to_cli(True)
    try:
        with pytest.raises(ConfigError) as size_cli:
            describe_onnx(path, ModelFacts(input_size=(16, 8)))
        with pytest.raises(ConfigError) as classes_cli:
            describe_onnx(path, ModelFacts(num_classes=4))
        with pytest.raises(ConfigError) as dynamic_cli:
            describe_onnx(save(conv_model([1, 3, "h", "w"], [1, 5, "h", "w"]), tmp_path / "d.onnx"))
    finally:
        speak_to_cli(False)
    assert "but --input-size 16x8 was given" in str(size_cli.value)
    assert "but --num-classes 4 was given" in str(classes_cli.value)
    assert str(dynamic_cli.value).endswith("no sidecar saying which to use; give it with --input-size HEIGHTxWIDTH.")
    with pytest.raises(ConfigError) as dynamic:
        describe_onnx(tmp_path / "d.onnx")
    assert str(dynamic.value).endswith("give it with facts=ModelFacts(input_size=(H, W)).")
    two = conv_model([1, 3, 8, 8])
    two.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 8, 8]))
    with pytest.raises(InputFileError) as inputs:
        describe_onnx(save(two, tmp_path / "two.onnx"))
    assert str(inputs.value) == (f"{tmp_path / 'two.onnx'} does not take one NCHW image batch (its inputs: x, mask); "
                                 f"edgeseg runs single-input segmentation models.")
    flat = conv_model([1, 3, 8, 8])
    flat.graph.input[0].type.tensor_type.shape.dim.pop()
    with pytest.raises(InputFileError, match="does not take one NCHW image batch"):
        describe_onnx(save(flat, tmp_path / "flat.onnx"))
    grey = conv_model([1, 1, 8, 8])
    with pytest.raises(InputFileError) as channels:
        describe_onnx(save(grey, tmp_path / "grey.onnx"))
    assert str(channels.value) == f"{tmp_path / 'grey.onnx'} takes 1-channel images; edgeseg feeds RGB (3 channels)."


def test_a_file_that_is_not_onnx_is_one_sentence(tmp_path):
    from edgeseg.errors import InputFileError

    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x07not a protobuf at all")
    with pytest.raises(InputFileError) as error:
        graph_summary(path)
    assert str(error.value).startswith(f"{path} is not a readable ONNX model (")
    assert str(error.value).endswith("); it may be truncated or another format, so re-export it.")
    assert "(NoneType)" not in str(error.value)


def test_weights_outside_the_file_are_not_read_to_describe_it(tmp_path):
    model = conv_model([1, 3, 8, 8])
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.weights", size_threshold=0)
    (tmp_path / "m.weights").unlink()  # a user copied the graph without its weights file
    assert graph_summary(tmp_path / "m.onnx")["inputs"][0]["shape"] == [1, 3, 8, 8]


def test_the_imagenet_default_is_said_unless_both_mean_and_std_are_given(tmp_path, monkeypatch):
    import edgeseg.console
    from edgeseg.foreign_onnx import onnx_meta

    said = []
    monkeypatch.setattr(edgeseg.console, "say", said.append)
    path = save(conv_model([1, 3, 8, 8]), tmp_path / "m.onnx")
    onnx_meta(path, {}, ModelFacts(mean=(0.5, 0.5, 0.5)))  # std missing: the default still applies to it
    onnx_meta(path, {}, ModelFacts(std=(0.5, 0.5, 0.5)))
    onnx_meta(path, {}, None)
    assert said == ["m.onnx has no sidecar: normalising with ImageNet's mean/std (the default; give --mean and "
                    "--std if the model was trained with others)"] * 3
    onnx_meta(path, {}, ModelFacts(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert len(said) == 3
    assert onnx_meta(path, {"kind": "onnx", "mine": 1}, None) == {"kind": "onnx", "mine": 1}  # a sidecar wins


def test_one_static_and_one_dynamic_side_is_a_dynamic_size(tmp_path):
    path = save(conv_model([1, 3, 8, "w"], [1, 5, 8, "w"]), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="dynamic input size"):
        describe_onnx(path)
    assert describe_onnx(path, ModelFacts(input_size=(8, 16)))["input"]["width"] == 16


def test_a_graph_importing_no_standard_opset_says_none(tmp_path):
    path = save(conv_model([1, 3, 8, 8], opsets=(("com.microsoft", 1),)), tmp_path / "m.onnx")
    assert graph_summary(path)["opset"] is None
    assert describe_onnx(path)["onnx"]["opset"] is None


def test_an_undefined_output_type_is_read_as_float_logits(tmp_path):
    model = conv_model([1, 3, 8, 8], classes=4)
    model.graph.output[0].type.tensor_type.elem_type = 0
    onnx_section = describe_onnx(save(model, tmp_path / "m.onnx"))["onnx"]
    assert (onnx_section["output_kind"], onnx_section["output_dtype"]) == ("logits", "float32")


def test_an_unsigned_class_map_is_a_class_map(tmp_path):
    argmax = helper.make_node("ArgMax", ["conv"], ["am"], axis=1, keepdims=0)
    cast = helper.make_node("Cast", ["am"], ["y"], to=TensorProto.UINT8)
    model = conv_model([1, 3, 8, 8], [1, 8, 8], output_type=TensorProto.UINT8, extra_nodes=[argmax, cast])
    model.graph.node[0].output[0] = "conv"
    assert graph_summary(save(model, tmp_path / "m.onnx"))["class_map_output"] is True


def test_a_grey_input_cannot_run(tmp_path):
    summary = graph_summary(save(conv_model([1, 1, 8, 8]), tmp_path / "m.onnx"))
    assert summary["cannot_run"] == "its input has 1 channels in dimension 1 (edgeseg feeds NCHW RGB)"
    assert summary["verbs_need"] == []


def test_a_keepdims_class_map_does_not_pass_for_one_class_logits(tmp_path):
    argmax = helper.make_node("ArgMax", ["conv"], ["y"], axis=1, keepdims=1)
    path = save(conv_model([1, 3, 8, 8], [1, 1, 8, 8], output_type=TensorProto.INT64, extra_nodes=[argmax]),
                tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="cannot be read from its output"):
        describe_onnx(path)  # its 1 is the kept dimension, not a class count
