"""edgeseg/exporting/ checked against references computed here, on a tiny UNet checkpoint saved in the test.

The exported graph's outputs against the PyTorch model's, at another batch size too;
the class-map tail against the logits graph's argmax; the sidecar's facts against what
was asked; the verification batch against the images it names; every refusal as its
sentence. No session fixtures: each test runs in about a second, so `make mutate
MODULE=edgeseg/exporting/` runs in minutes (benchmarks/results/mutation/exporting.md).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeseg.errors import AccuracyError, ConfigError, DataError
from edgeseg.spec import DatasetInfo, InputSpec

SPEC = InputSpec(height=16, width=24)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 3-class UNet (4 base channels, depth 2) for 16x24 inputs, and the module itself."""
    from edgeseg.arch.registry import create_model
    from edgeseg.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("unet", 3, base_channels=4, encoder_depth=2).eval()
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, model, arch="unet", num_classes=3, input_spec=SPEC, dataset=DatasetInfo(num_classes=3),
                    arch_args={"base_channels": 4, "encoder_depth": 2})
    return path, model


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Each test runs in its own folder: a file written at a wrong relative path lands there, not in the next test's."""
    monkeypatch.chdir(tmp_path)


def _run(path, batch):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_exported_graph_computes_what_the_pytorch_model_does(checkpoint, tmp_path):
    from edgeseg.exporting.api import export
    from edgeseg.sidecar import read_sidecar

    path, model = checkpoint
    out = tmp_path / "m.onnx"
    meta = export(str(path), str(out), verify_images=2)
    batch = np.random.default_rng(0).normal(size=(3, 3, 16, 24)).astype(np.float32)  # batch 3: dynamic
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got = _run(out, batch)
    assert got.shape == (3, 3, 16, 24)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["input"] and [o.name for o in graph.graph.output] == ["logits"]
    assert _dims(graph.graph.input[0]) == ["batch", 3, 16, 24] and _dims(graph.graph.output[0])[0] == "batch"
    assert {o.domain: o.version for o in graph.opset_import}[""] == 17
    assert meta == read_sidecar(out)
    assert meta["onnx"] == {"opset": 17, "simplified": True, "input": "input", "output": "logits",
                            "dynamic_batch": True, "output_kind": "logits", "output_dtype": "float32"}
    assert meta["precision"] == "fp32" and meta["stage"] == "export" and meta["parent"]["artifact"] == "m.pt"
    assert meta["model"] == {"arch": "unet", "num_classes": 3}
    assert meta["input"]["height"] == 16 and meta["input"]["width"] == 24
    parity = meta["parity"]
    assert parity["num_images"] == 2 and parity["images"] == "synthetic scenes"
    assert parity["argmax_agreement"] == 100.0 and 0 <= parity["max_abs_diff"] < 1e-4
    assert "class_map_agreement" not in parity


def test_export_at_opset_13_unsimplified_next_to_the_checkpoint(checkpoint, tmp_path):
    import shutil

    from edgeseg.exporting.api import export

    path, model = checkpoint
    local = tmp_path / "net.pt"
    shutil.copy(path, local)
    meta = export(str(local), opset=13, simplify_model=False, verify_images=1)
    out = tmp_path / "net.onnx"  # the default: the checkpoint's name with .onnx
    assert out.exists() and meta["onnx"]["opset"] == 13 and meta["onnx"]["simplified"] is False
    graph = onnx.load(str(out))
    assert {o.domain: o.version for o in graph.opset_import}[""] == 13
    assert meta["parity"]["num_images"] == 1
    batch = np.random.default_rng(1).normal(size=(1, 3, 16, 24)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(_run(out, batch), model(torch.from_numpy(batch)).numpy(), rtol=1e-4, atol=1e-5)
    # the exporter folds constants itself: the model's BatchNorms are inside the convs even unsimplified
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert "BatchNormalization" not in {n.op_type for n in graph.graph.node}
    # simplification removes nodes (constant folding of the shape arithmetic) and keeps the outputs
    export(str(local), str(tmp_path / "slim.onnx"), opset=13, verify_images=1)
    assert len(onnx.load(str(tmp_path / "slim.onnx")).graph.node) < len(graph.graph.node)


def test_a_simplifier_failure_keeps_the_unsimplified_export(checkpoint, tmp_path, monkeypatch, capsys):
    import onnxslim

    from edgeseg.exporting.api import export

    def broken(model):
        raise RuntimeError("boom")

    monkeypatch.setattr(onnxslim, "slim", broken)
    meta = export(str(checkpoint[0]), str(tmp_path / "m.onnx"), verify_images=1)
    captured = capsys.readouterr()
    printed = " ".join((captured.out + captured.err).split())
    assert "onnxslim could not simplify the model (boom); keeping it unsimplified" in printed
    assert meta["onnx"]["simplified"] is False and meta["parity"]["argmax_agreement"] == 100.0
    onnx.checker.check_model(str(tmp_path / "m.onnx"))


def test_export_refusals(checkpoint, tmp_path):
    from edgeseg.exporting.api import export

    path, _ = checkpoint
    with pytest.raises(ConfigError, match=r"^--opset 12 is too old; use 13 or newer.$"):
        export(str(path), str(tmp_path / "a.onnx"), opset=12)
    with pytest.raises(ConfigError, match=r"^--argmax-dtype applies only with --argmax; add --argmax or drop it.$"):
        export(str(path), str(tmp_path / "a.onnx"), argmax_dtype="int32")
    with pytest.raises(ConfigError, match=r"^--argmax-dtype int64 is not one of uint8, int32; use uint8"):
        export(str(path), str(tmp_path / "a.onnx"), argmax=True, argmax_dtype="int64")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("agreement, passes", [(99.9, True), (99.89, False)])
def test_export_needs_99_9_percent_argmax_agreement(agreement, passes, checkpoint, tmp_path, monkeypatch):
    from edgeseg.exporting import api

    path, _ = checkpoint
    monkeypatch.setattr(api, "compare_outputs",
                        lambda *a, **k: {"num_images": 1, "max_abs_diff": 3.0, "argmax_agreement": agreement})
    out = tmp_path / "m.onnx"
    if passes:
        assert api.export(str(path), str(out), verify_images=1)["parity"]["argmax_agreement"] == agreement
        return
    with pytest.raises(AccuracyError, match=r"^The ONNX model agrees with PyTorch on only 99.890% of pixels "
                                            r"\(needs 99.9%\); the export is not trustworthy, try another --opset.$"):
        api.export(str(path), str(out), verify_images=1)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("dtype, elem", [("uint8", TensorProto.UINT8), ("int32", TensorProto.INT32)])
def test_argmax_export_outputs_the_logits_argmax(dtype, elem, checkpoint, tmp_path):
    from edgeseg.exporting.api import export

    path, model = checkpoint
    out = tmp_path / "c.onnx"
    meta = export(str(path), str(out), verify_images=1, argmax=True, argmax_dtype=None if dtype == "uint8" else dtype)
    batch = np.random.default_rng(2).normal(size=(2, 3, 16, 24)).astype(np.float32)
    got = _run(out, batch)
    with torch.no_grad():
        logits = model(torch.from_numpy(batch)).numpy()
    assert got.dtype == np.dtype(dtype) and got.shape == (2, 16, 24)
    np.testing.assert_array_equal(got, logits.argmax(1))
    graph = onnx.load(str(out)).graph
    assert [o.name for o in graph.output] == ["classes"] and graph.output[0].type.tensor_type.elem_type == elem
    assert meta["onnx"]["output"] == "classes" and meta["onnx"]["output_kind"] == "class_map"
    assert meta["onnx"]["output_dtype"] == dtype and meta["parity"]["class_map_agreement"] == 100.0
    assert type(meta["parity"]["class_map_agreement"]) is float  # a percentage, as argmax_agreement


def test_a_class_map_that_differs_from_the_logits_argmax_is_refused(checkpoint, tmp_path, monkeypatch):
    """A broken tail (class 1's logit raised before the ArgMax) differs on the pixels the test counts."""
    import edgeseg.exporting.argmax as argmax
    from edgeseg.exporting.api import export
    from edgeseg.exporting.verify import verification_images

    path, model = checkpoint
    batch, _ = verification_images(SPEC, None, {}, 2)
    with torch.no_grad():
        logits = model(torch.from_numpy(batch)).numpy()
    # raise class 1 by the 30th percentile of its shortfall behind the winner: some of the pixels it loses flip
    shortfall = logits.max(1) - logits[:, 1]
    bias = np.array([0.0, float(np.quantile(shortfall[shortfall > 0], 0.3)), 0.0], np.float32).reshape(1, 3, 1, 1)

    def biased_tail(path, dtype):
        graph = onnx.load(str(path))
        argmax.append_class_map(graph, dtype)
        graph.graph.initializer.append(numpy_helper.from_array(bias, "bias"))
        graph.graph.node.insert(len(graph.graph.node) - 2, helper.make_node("Add", ["logits", "bias"], ["biased"]))
        next(n for n in graph.graph.node if n.op_type == "ArgMax").input[0] = "biased"
        onnx.save(graph, str(path))

    differ = 100.0 * float((logits.argmax(1) != (logits + bias).argmax(1)).mean())
    assert 0 < differ < 100 and round(differ, 4) != round(differ)
    monkeypatch.setattr(argmax, "add_class_map_file", biased_tail)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AccuracyError) as refused:
        export(str(path), str(out / "c.onnx"), verify_images=2, argmax=True)
    assert str(refused.value) == (f"The class-map model differs from the logits model's argmax on "
                                  f"{100 - round(100 - differ, 4):.4f}% of pixels; export without --argmax and "
                                  f"report this.")
    assert not list(out.iterdir())


def test_append_class_map_by_hand():
    from edgeseg.exporting.argmax import CLASS_MAP_OUTPUT, append_class_map, class_map_tail

    model = _logits_model()
    append_class_map(model, "int32")
    argmax, cast = model.graph.node[-2:]
    assert (argmax.op_type, argmax.name, list(argmax.input)) == ("ArgMax", "class_map_argmax", ["logits"])
    assert {a.name: a.i for a in argmax.attribute} == {"axis": 1, "keepdims": 0}
    assert (cast.op_type, cast.name, list(cast.input), list(cast.output)) == (
        "Cast", "class_map_cast", list(argmax.output), [CLASS_MAP_OUTPUT])
    assert {a.name: a.i for a in cast.attribute} == {"to": TensorProto.INT32}
    assert [o.name for o in model.graph.output] == ["classes"] and _dims(model.graph.output[0]) == ["n", 5, 6]
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.INT32
    assert class_map_tail(model) == "int32"
    x = np.random.default_rng(3).normal(size=(2, 4, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(_run_model(model, x), x.argmax(1))


def _logits_model(outputs=1, dims=("n", 4, 5, 6), elem=TensorProto.FLOAT):
    nodes = [helper.make_node("Identity", ["x"], ["logits"])]
    outs = [helper.make_tensor_value_info("logits", elem, list(dims))]
    for k in range(1, outputs):
        nodes.append(helper.make_node("Identity", ["x"], [f"extra{k}"]))
        outs.append(helper.make_tensor_value_info(f"extra{k}", elem, list(dims)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, list(dims))], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run_model(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_append_class_map_refuses_what_is_not_one_float_logits_output():
    from edgeseg.exporting.argmax import append_class_map

    with pytest.raises(ConfigError, match=r"^The model has 2 outputs; --argmax needs exactly one \(the logits\).$"):
        append_class_map(_logits_model(outputs=2), "uint8")
    with pytest.raises(ConfigError, match=r"^The model's output logits is not NxCxHxW float logits \(it is "
                                          r"\['n', 4, 5\]\); export the logits model with --argmax, not a model"):
        append_class_map(_logits_model(dims=("n", 4, 5)), "uint8")
    with pytest.raises(ConfigError, match="is not NxCxHxW float logits"):
        append_class_map(_logits_model(elem=TensorProto.DOUBLE), "uint8")


def test_class_map_dtype_defaults_and_checks():
    from edgeseg.exporting.argmax import check_dtype, default_dtype

    assert default_dtype(255) == "uint8" and default_dtype(256) == "int32" and default_dtype(2) == "uint8"
    assert check_dtype("uint8", 255) == "uint8" and check_dtype("int32", 1000) == "int32"
    with pytest.raises(ConfigError, match=r"^The model has 256 classes, too many for a uint8 class map \(255 at most\); "
                                          r"use --argmax-dtype int32.$"):
        check_dtype("uint8", 256)
    with pytest.raises(ConfigError, match=r"^--argmax-dtype int64 is not one of uint8, int32; use uint8 \(TensorRT >= 10, "
                                          r"ONNX Runtime\) or int32 \(TensorRT 8.5\).$"):
        check_dtype("int64", 3)


def test_class_map_tail_recognises_only_argmax_then_cast():
    from edgeseg.exporting.argmax import append_class_map, class_map_tail

    assert class_map_tail(_logits_model()) is None
    assert class_map_tail(append_class_map(_logits_model(), "uint8")) == "uint8"
    # a Cast of something else than an ArgMax, a Cast of the graph input, a Cast to int64, two outputs
    for source_op, to in (("Relu", TensorProto.UINT8), (None, TensorProto.UINT8), ("ArgMax", TensorProto.INT64)):
        nodes = [] if source_op is None else [helper.make_node(source_op, ["x"], ["a"], **(
            {"axis": 1, "keepdims": 0} if source_op == "ArgMax" else {}))]
        nodes.append(helper.make_node("Cast", ["x" if source_op is None else "a"], ["y"], to=to))
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                                  [helper.make_tensor_value_info("y", to, None)])
        assert class_map_tail(helper.make_model(graph)) is None, source_op
    two = append_class_map(_logits_model(), "uint8")
    two.graph.output.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, None))
    assert class_map_tail(two) is None


def test_strip_class_map_gives_back_the_logits_output():
    from edgeseg.exporting.argmax import append_class_map, class_map_tail, strip_class_map

    model = append_class_map(_logits_model(), "uint8")
    logits = strip_class_map(model)
    assert [n.op_type for n in logits.graph.node] == ["Identity"]
    assert [o.name for o in logits.graph.output] == ["logits"] and _dims(logits.graph.output[0]) == ["n", 4, 5, 6]
    assert logits.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT and class_map_tail(logits) is None
    x = np.random.default_rng(4).normal(size=(1, 4, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(_run_model(logits, x), x)
    # logits whose shape inference cannot size: a batch dimension and unknown sizes
    dynamic = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["logits"]),
         helper.make_node("ArgMax", ["logits"], ["am"], axis=1, keepdims=0),
         helper.make_node("Cast", ["am"], ["classes"], to=TensorProto.UINT8)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("classes", TensorProto.UINT8, None)])
    stripped = strip_class_map(helper.make_model(dynamic, opset_imports=[helper.make_opsetid("", 17)]))
    dims = _dims(stripped.graph.output[0])
    assert len(dims) == 4 and stripped.graph.output[0].name == "logits"
    # logits from an operator shape inference does not know: a named batch and three unknown sizes
    unknown = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["logits"], domain="vendor"),
         helper.make_node("ArgMax", ["logits"], ["am"], axis=1, keepdims=0),
         helper.make_node("Cast", ["am"], ["classes"], to=TensorProto.UINT8)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("classes", TensorProto.UINT8, None)])
    stripped = strip_class_map(helper.make_model(unknown, opset_imports=[helper.make_opsetid("", 17),
                                                                         helper.make_opsetid("vendor", 1)]))
    out = stripped.graph.output[0]
    assert out.name == "logits" and out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [(d.dim_param, d.HasField("dim_value")) for d in out.type.tensor_type.shape.dim] == [
        ("batch", False), ("", False), ("", False), ("", False)]


def test_add_class_map_file_rewrites_the_file(tmp_path):
    from edgeseg.exporting.argmax import add_class_map_file, class_map_tail

    path = tmp_path / "m.onnx"
    onnx.save(_logits_model(), str(path))
    add_class_map_file(path, "int32")
    assert class_map_tail(onnx.load(str(path))) == "int32"


# ---------------------------------------------------------------- verify.py

def test_verification_images_without_data_are_seeded_synthetic_scenes():
    from edgeseg.data.synthetic import render_scene
    from edgeseg.exporting.verify import verification_images
    from edgeseg.runtime.preprocess import preprocess

    batch, source = verification_images(SPEC, None, {}, 3)
    assert source == "synthetic scenes" and batch.shape == (3, 3, 16, 24) and batch.dtype == np.float32
    for i in range(3):
        image = render_scene(np.random.default_rng([7, i]), 16, 24)[0]
        np.testing.assert_array_equal(batch[i:i + 1], preprocess(image, SPEC))
    # training data that has moved away: synthetic scenes again
    assert verification_images(SPEC, None, {"training": {"data": "/nowhere/at/all"}}, 1)[1] == "synthetic scenes"


def test_verification_images_come_from_the_val_split_spread_over_it(tmp_path):
    from edgeseg.data.dataset import resolve_split
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset
    from edgeseg.exporting.verify import verification_images
    from edgeseg.runtime.preprocess import preprocess

    root = write_dataset(tmp_path / "d", SyntheticConfig(seed=2, num_train=1, num_val=4, height=16, width=24))
    split = resolve_split(str(root), "val", require_labels=False)
    batch, source = verification_images(SPEC, str(root), {}, 2)
    assert source == str(split.root) and batch.shape == (2, 3, 16, 24)
    for row, index in enumerate([0, 3]):  # the first and the last of 4
        np.testing.assert_array_equal(batch[row:row + 1], preprocess(split.image(index), SPEC))
    assert verification_images(SPEC, str(root), {}, 9)[0].shape[0] == 4
    # the training data recorded in the parent's sidecar, when no --data is given; --data wins over it
    assert verification_images(SPEC, None, {"training": {"data": str(root)}}, 1)[1] == str(split.root)
    assert verification_images(SPEC, str(root), {"training": {"data": "/nowhere"}}, 1)[1] == str(split.root)
    with pytest.raises(DataError):
        verification_images(SPEC, str(tmp_path / "missing"), {"training": {"data": str(root)}}, 1)


class _Scaled(torch.nn.Module):
    def __init__(self, as_dict):
        super().__init__()
        self.as_dict = as_dict

    def forward(self, x):
        return {"out": x, "aux": x * 0} if self.as_dict else x


def test_compare_outputs_against_numpy(tmp_path):
    from edgeseg.exporting.verify import compare_outputs

    scale = np.array([1.0, -1.0, 0.5], np.float32).reshape(1, 3, 1, 1)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 2, 3])],
                              [numpy_helper.from_array(scale, "s")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    batch = np.random.default_rng(5).normal(size=(2, 3, 2, 3)).astype(np.float32)
    onnx_out = batch * scale
    expected_agreement = round(100.0 * float((batch.argmax(1) == onnx_out.argmax(1)).mean()), 4)
    assert 0 < expected_agreement < 100
    for as_dict in (False, True):
        got = compare_outputs(_Scaled(as_dict), path, batch)
        assert got == {"num_images": 2, "max_abs_diff": pytest.approx(float(np.abs(batch - onnx_out).max())),
                       "argmax_agreement": expected_agreement}


def test_export_defaults_and_messages(checkpoint, tmp_path, capsys):
    """8 verification images by default; the sidecar's kind and dataset; what export says."""
    from edgeseg.exporting.api import export

    meta = export(str(checkpoint[0]), str(tmp_path / "m.onnx"))
    assert meta["parity"]["num_images"] == 8 and meta["kind"] == "onnx"
    assert meta["dataset"]["num_classes"] == 3 and meta["dataset"]["classes"] == ["class0", "class1", "class2"]
    captured = capsys.readouterr()
    printed = " ".join((captured.out + captured.err).split())
    assert (f"Exported {tmp_path / 'm.onnx'} (opset 17); argmax agreement with PyTorch 100.000%, max |diff| "
            f"{meta['parity']['max_abs_diff']:.2e}") in printed
    export(str(checkpoint[0]), str(tmp_path / "c.onnx"), verify_images=1, argmax=True)
    captured = capsys.readouterr()
    printed = " ".join((captured.out + captured.err).split())
    assert ("The model outputs its class map (uint8, output 'classes'), equal to the logits model's argmax on every "
            "verification pixel") in printed


def test_export_verifies_on_the_val_split_of_data(checkpoint, tmp_path):
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset
    from edgeseg.exporting.api import export

    root = write_dataset(tmp_path / "d", SyntheticConfig(seed=3, num_train=1, num_val=2, height=16, width=24))
    meta = export(str(checkpoint[0]), str(tmp_path / "m.onnx"), data=str(root), verify_images=5)
    assert meta["parity"]["images"] == str(root / "val") and meta["parity"]["num_images"] == 2


def test_a_pickled_module_needs_trust_and_an_input_size(checkpoint, tmp_path):
    from edgeseg.errors import InputFileError, UntrustedFileError
    from edgeseg.exporting.api import export
    from edgeseg.spec import ModelFacts

    _, model = checkpoint
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(UntrustedFileError, match="holds pickled Python objects"):
        export(str(tmp_path / "whole.pt"), str(tmp_path / "a.onnx"))
    with pytest.raises(InputFileError, match=r"^\S+whole.pt does not record its input size; give it with "
                                             r"--input-size HEIGHTxWIDTH.$"):
        export(str(tmp_path / "whole.pt"), str(tmp_path / "a.onnx"), trust_checkpoint=True)
    meta = export(str(tmp_path / "whole.pt"), str(tmp_path / "a.onnx"), trust_checkpoint=True, verify_images=1,
                  facts=ModelFacts(input_size=(16, 24)))
    assert meta["input"]["height"] == 16 and meta["input"]["width"] == 24 and meta["model"]["num_classes"] == 3


def test_export_records_the_loaders_source_and_a_sidecars_model_facts(checkpoint, tmp_path, monkeypatch):
    import json
    import shutil

    from edgeseg.exporting import api
    from edgeseg.spec import ModelFacts

    real = api.load_model
    asked = []

    def loader(path, **kwargs):  # the real loader, its answer marked as a file from elsewhere
        asked.append(kwargs)
        loaded = real(path, **kwargs)
        loaded.meta["source"] = {"file": "m.pt", "format": "bare state_dict"}
        return loaded

    monkeypatch.setattr(api, "load_model", loader)
    local = tmp_path / "m.pt"
    shutil.copy(checkpoint[0], local)
    facts = ModelFacts(num_classes=3)
    meta = api.export(str(local), str(tmp_path / "a.onnx"), verify_images=1, facts=facts, trust_checkpoint=True)
    assert asked == [{"trust_checkpoint": True, "facts": facts}]
    assert meta["source"] == {"file": "m.pt", "format": "bare state_dict"}
    assert meta["model"] == {"arch": "unet", "num_classes": 3}
    # a sidecar beside the file that names the model: its facts are what the export records
    (tmp_path / "m.pt.json").write_text(json.dumps({"model": {"arch": "unet", "num_classes": 3, "variant": "x"}}))
    meta = api.export(str(local), str(tmp_path / "b.onnx"), verify_images=1)
    assert meta["model"] == {"arch": "unet", "num_classes": 3, "variant": "x"}
    assert asked[-1] == {"trust_checkpoint": False, "facts": None}


def test_verification_images_need_no_labels(tmp_path):
    import shutil

    from edgeseg.data.synthetic import SyntheticConfig, write_dataset
    from edgeseg.exporting.verify import verification_images

    root = write_dataset(tmp_path / "d", SyntheticConfig(seed=2, num_train=1, num_val=2, height=16, width=24))
    shutil.rmtree(root / "val" / "labels")  # images only: enough to compare two runtimes
    batch, source = verification_images(SPEC, str(root), {}, 2)
    assert batch.shape == (2, 3, 16, 24) and source == str(root / "val")


@pytest.mark.parametrize("text, opset, hint", [
    ("input size not accessible\nTorchScript graph ...", 17,
     "its adaptive pooling exports only with a fixed batch, and edgeseg writes a dynamic one (TensorRT's profiles "
     "need it); bench, eval and predict run it in PyTorch"),
    ("Unsupported: ADAPTIVE_avg_pool2d with output size 6", 17,
     "its adaptive pooling has no ONNX form at this size; pick an --input-size whose deepest feature map divides by "
     "every pool size (UperNet's 1, 2, 3, 6: a multiple of 192 at stride 32)"),
    ("Exporting the operator 'aten::col2im' to ONNX opset version 17 is not supported", 17,
     "its fold needs ONNX's Col2Im: try --opset 18"),
    ("Exporting the operator 'aten::col2im' is odd", 18, "bench, eval and predict still run it in PyTorch"),
    ("", 17, "bench, eval and predict still run it in PyTorch"),
])
def test_export_refusal_is_one_sentence_with_a_hint(text, opset, hint):
    from edgeseg.exporting.api import export_refusal

    first = (text.splitlines() or ["RuntimeError"])[0][:200]
    refusal = export_refusal(RuntimeError(text), 64, 96, opset)
    assert isinstance(refusal, ConfigError)
    assert str(refusal) == f"torch.onnx could not export this model at 64x96, opset {opset} ({first}); {hint}."
    long = export_refusal(ValueError("x" * 300 + "\nsecond line"), 8, 8, 13)
    assert str(long).startswith(f"torch.onnx could not export this model at 8x8, opset 13 ({'x' * 200}); ")


def test_the_exporters_native_output_is_kept_out_of_the_terminal(capfd):
    import os

    from edgeseg.exporting.api import _native_stdout_silenced

    with _native_stdout_silenced():
        os.write(1, b"TorchScript graph dump\n")
    os.write(1, b"after\n")
    assert capfd.readouterr().out == "after\n"


def test_a_model_torch_onnx_cannot_write_is_refused_in_one_sentence(tmp_path, capfd):
    from edgeseg.exporting.api import export_onnx

    class Unexportable(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x[:, :, :4, :4]).real  # no ONNX form

    with pytest.raises(ConfigError, match=r"^torch.onnx could not export this model at 4x4, opset 17 \(.+\); bench, "
                                          r"eval and predict still run it in PyTorch.$"):
        export_onnx(Unexportable(), tmp_path / "x.onnx", 4, 4, 17)
    assert capfd.readouterr().out == ""
