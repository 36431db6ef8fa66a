"""``edgeseg qat`` on a user's own tiny network (a state_dict and its architecture file), end to end.

References computed here, not by the code under test: activation ranges from ONNX Runtime
runs of the FP32 graph on the calibration images, weight scales from the trained weights
(2 max|w| / 254, ONNX Runtime's symmetric rule), the written model's dequantized tensors
from ONNX Runtime against the fake-quantised torch model's, the layout of a Q/DQ model
that edgeseg calibrate writes for the same graph, and the flags the TensorRT double records.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from edgeseg.spec import ModelFacts
from edgeseg.training.loop import TrainConfig

SIZE = 32
NET = '''from torch import nn


class Net(nn.Module):
    """conv-bn-relu, max pool, a residual block, a scaling, bilinear upsampling, a 1x1 classifier."""

    def __init__(self, num_classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1))
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = nn.functional.relu(self.block(x) + x) * 0.75  # a Mul by a constant: the Q/DQ model rounds the 0.75
        return self.classifier(nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear",
                                                          align_corners=False))


def build(num_classes):
    return Net(num_classes)
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset

    return write_dataset(tmp_path_factory.mktemp("qatdata") / "synthetic",
                         SyntheticConfig(seed=5, num_train=8, num_val=4, height=SIZE, width=SIZE))


@pytest.fixture(scope="module")
def user_model(tmp_path_factory, data):
    """(weights file, ModelFacts): a bare state_dict trained a few steps outside edgeseg, with BatchNorm statistics."""
    import importlib.util

    from edgeseg.data.dataset import dataset_info

    folder = tmp_path_factory.mktemp("user")
    code = folder / "mynet.py"
    code.write_text(NET)
    spec = importlib.util.spec_from_file_location("mynet_for_qat", code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = dataset_info(data).num_classes
    torch.manual_seed(0)
    net = module.build(classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        images, labels = torch.randn(4, 3, SIZE, SIZE), torch.randint(0, classes, (4, SIZE, SIZE))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
    path = folder / "weights.pth"
    torch.save(net.state_dict(), path)
    return path, ModelFacts(arch=f"{code}:build", input_size=(SIZE, SIZE))


def _training(epochs=1, lr=1e-3, **options):
    return TrainConfig(epochs=epochs, batch_size=4, lr=lr, val_every=1, tensorboard=False, **options)


def _qat(user_model, data, out, **options):
    from edgeseg.quantization_aware.api import qat

    weights, facts = user_model
    options.setdefault("training", _training())
    return qat(str(weights), str(data), str(out), method="minmax", num=8, facts=facts, **options)


def _initializers(path) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _activation_scales(path) -> dict:
    """{tensor: scale} of every QuantizeLinear in a Q/DQ model (the activations it quantises)."""
    model = onnx.load(str(path))
    inits = _initializers(path)
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}


def _layout(path) -> tuple:
    """(each non-Q/DQ node and which of its inputs read a DequantizeLinear, the activations quantised)."""
    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    reads = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        reads.append((node.name, node.op_type, tuple(i for i, name in enumerate(node.input)
                                                      if name in producer and producer[name].op_type
                                                      == "DequantizeLinear")))
    return sorted(reads), sorted(_activation_scales(path))


def _batches(data, spec, split="train"):
    from edgeseg.data.images import list_images, read_image
    from edgeseg.runtime.preprocess import preprocess

    return [preprocess(read_image(f), spec) for f in list_images(Path(data) / split / "images")]


def _run_with(path, batch, names):
    """ONNX Runtime (no graph rewrites) on ``path`` with the ``names`` tensors exposed as outputs."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    return dict(zip(outputs, session.run(outputs, {session.get_inputs()[0].name: batch})))


@pytest.fixture(scope="module")
def trained(user_model, data, tmp_path_factory):
    """One QAT run of two epochs with learned scales: (folder, sidecar)."""
    folder = tmp_path_factory.mktemp("qat")
    sidecar = _qat(user_model, data, folder / "m.int8.onnx", training=_training(epochs=2))
    return folder, sidecar


@pytest.mark.parametrize("quantize_outputs", [False, True])
def test_the_written_model_computes_what_the_fake_quantised_model_computes(user_model, data, tmp_path,
                                                                            quantize_outputs):
    """ONNX Runtime on the written Q/DQ model against the trained torch model, tensor by tensor: every quantised
    activation within one quantisation step, the logits' argmax the same, the weight scales 2 max|w| / 254."""
    from edgeseg.quantization_aware import api

    weights, facts = user_model
    start = api._calibrated_start(str(weights), tmp_path, str(data), None, "minmax", 99.99, 8, 0, quantize_outputs,
                                  (), False, facts, 255)
    student, _teacher = api._models(start, learn_scales=True)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.01)
    torch.manual_seed(1)
    for _ in range(3):  # move the weights and the scales away from where calibrate put them
        optimizer.zero_grad()
        student(torch.randn(2, 3, SIZE, SIZE)).square().mean().backward()
        optimizer.step()
    moved = student.scales()
    exported = _initializers(start["fp32"])
    assert all(not np.array_equal(value.numpy(), exported[name])  # the weights learned through their rounding
               for name, value in student.graph.learned_weights().items())
    assert any(abs(moved[t] - student.placement.activations[t]) > 1e-4 * moved[t] for t in moved)
    out = tmp_path / "m.int8.onnx"
    api._write(student, start, tmp_path, out, tmp_path / "m.calib.cache", quantize_outputs=quantize_outputs)

    batch = np.concatenate(_batches(data, start_spec(facts), "val"))
    scales = _activation_scales(out)
    assert sorted(scales) == sorted(student.tensors)
    model = onnx.load(str(out))
    dq_of = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    q_out = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    ort_values = _run_with(out, batch, [dq_of[q_out[t]] for t in scales])
    student.record = {}
    with torch.no_grad():
        logits = student(torch.from_numpy(batch)).numpy()
    for tensor, scale in scales.items():
        np.testing.assert_allclose(scale, moved[tensor], rtol=1e-6)  # the learned scale is the written one
        difference = np.abs(ort_values[dq_of[q_out[tensor]]] - student.record[tensor].numpy())
        assert difference.max() <= scale * 1.001, tensor  # at most one step, where rounding ties break apart
        assert (difference > scale * 0.5).mean() < 0.01, tensor
    ort_logits = ort_values["logits"]
    assert (ort_logits.argmax(1) == logits.argmax(1)).mean() > 0.99
    np.testing.assert_allclose(ort_logits, logits, atol=0.05 * np.abs(logits).max())

    trained_weights = student.graph.learned_weights()
    inits = _initializers(out)
    checked, constants = 0, []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("_quantized"):
            name = node.input[0][: -len("_quantized")]
            if name not in trained_weights:  # a constant: the Mul's 0.75, rounded once and kept
                constants.append(float(inits[node.input[0]]) * float(inits[node.input[1]]))
                continue
            w = trained_weights[name].numpy()
            expected = (np.abs(w).reshape(w.shape[0], -1).max(1).astype(np.float64) * 2 / 254).astype(np.float32)
            np.testing.assert_allclose(inits[node.input[1]], expected, rtol=1e-6)
            checked += 1
    assert checked == 3  # the stem and the two block convolutions; the classifier stays float
    np.testing.assert_allclose(constants, [0.75], rtol=1e-6)


def start_spec(facts):
    return facts.input_spec()


def test_scales_start_from_calibrates_ranges(user_model, data, tmp_path):
    """With fixed scales and a zero learning rate, every written scale is max |activation| / 127 over the
    calibration images (minmax), measured here on the FP32 graph with ONNX Runtime."""
    weights, facts = user_model
    out = tmp_path / "fixed.int8.onnx"
    sidecar = _qat(user_model, data, out, training=_training(lr=0.0), learn_scales=False)
    scales = _activation_scales(out)
    assert len(scales) >= 4  # the input, the stem's output after pooling, the block's input, the residual sum
    fp32 = tmp_path / "fixed.onnx"  # the trained FP32 graph: with lr 0, the exported one
    peaks = {name: 0.0 for name in scales}
    for batch in _batches(data, facts.input_spec()):
        for name, value in _run_with(fp32, batch, [n for n in scales if n != "input"]).items():
            if name in peaks:
                peaks[name] = max(peaks[name], float(np.abs(value).max()))
        peaks["input"] = max(peaks["input"], float(np.abs(batch).max())) if "input" in peaks else 0.0
    for name, scale in scales.items():
        np.testing.assert_allclose(scale, peaks[name] / 127, rtol=1e-5, err_msg=name)
    assert sidecar["quantization"]["scales"] == "fixed"
    # BatchNorm folded into the convolution with its running statistics, as TensorRT folds it
    graph = onnx.load(str(fp32))
    assert not [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
    state = torch.load(weights, weights_only=True)
    factor = (state["stem.1.weight"] / torch.sqrt(state["stem.1.running_var"] + 1e-5)).numpy()
    folded_w = state["stem.0.weight"].numpy() * factor[:, None, None, None]
    folded_b = (state["stem.0.bias"] - state["stem.1.running_mean"]).numpy() * factor + state["stem.1.bias"].numpy()
    stem = next(n for n in graph.graph.node if n.op_type == "Conv")
    inits = _initializers(fp32)
    np.testing.assert_allclose(inits[stem.input[1]], folded_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inits[stem.input[2]], folded_b, rtol=1e-5, atol=1e-6)


def test_resume_ends_bit_identical_to_an_unbroken_run(user_model, data, tmp_path, monkeypatch, trained):
    from edgeseg.training import loop
    from edgeseg.training.state import state_path

    straight, _ = trained
    out = tmp_path / "m.int8.onnx"
    write_csv = loop._write_csv

    def killed_after_first_epoch(path, history):
        write_csv(path, history)
        if history[-1]["epoch"] == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop, "_write_csv", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        _qat(user_model, data, out, training=_training(epochs=2))
    monkeypatch.undo()
    assert state_path(out).is_file() and not out.exists()
    from edgeseg.errors import ConfigError

    # the distillation's weight is part of the objective the state was trained with; refused before calibrating
    from edgeseg.quantization_aware import api

    calibrated = []
    monkeypatch.setattr(api, "_calibrated_start", lambda *args: calibrated.append(args))
    with pytest.raises(ConfigError, match=r"trained with kd weight 1, this run asks for 0\.5; resuming would change "
                                          r"the loss half-way\. .*\(kd_weight=\)"):
        _qat(user_model, data, out, training=_training(epochs=2), resume=True, kd_weight=0.5)
    with pytest.raises(ConfigError, match=r"trained with temperature 4, this run asks for 2; .*\(temperature=\)"):
        _qat(user_model, data, out, training=_training(epochs=2), resume=True, temperature=2.0)
    assert not calibrated
    monkeypatch.undo()
    finished = []

    def recorded(path, history):
        write_csv(path, history)
        finished.append(history[-1]["epoch"])

    monkeypatch.setattr(loop, "_write_csv", recorded)
    sidecar = _qat(user_model, data, out, training=_training(epochs=2), resume=True)
    monkeypatch.undo()
    assert finished == [2]  # it continued from the state: epoch 1 was not trained again
    assert [r["epoch"] for r in sidecar["qat"]["history"]] == [1, 2] and not state_path(out).exists()
    a, b = _initializers(straight / "m.int8.onnx"), _initializers(out)
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_layout_is_calibrates_and_passes_the_tensorrt_rules(trained, user_model, data, tmp_path):
    from edgeseg.engine.trt_rules import ALL_TARGETS, check_for_tensorrt
    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate

    folder, _ = trained
    out = folder / "m.int8.onnx"
    weights, facts = user_model
    export(str(weights), str(tmp_path / "ref.onnx"), data=str(data), facts=facts)
    calibrate(str(tmp_path / "ref.onnx"), str(data), method="minmax", num=8, bias_correction=False)
    assert _layout(out) == _layout(tmp_path / "ref.int8.onnx")
    for version in ALL_TARGETS:
        assert check_for_tensorrt(out, version) == [], version
    model = onnx.load(str(out))
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            source = node.input[0]
            kind = inits[source].data_type if source in inits else None
            assert kind == onnx.TensorProto.INT8 or producer[source].op_type == "QuantizeLinear"
        if node.op_type == "Conv" and len(node.input) > 2:
            assert inits[node.input[2]].data_type == onnx.TensorProto.FLOAT  # biases stay float


def test_sidecar_and_cache(trained, user_model):
    import edgeseg
    from edgeseg.fileio import sha256_of
    from edgeseg.quant.trt_cache import parse_cache
    from edgeseg.quantization_aware.api import qat

    assert edgeseg.qat is qat  # the verb stays a function once its package is imported

    folder, sidecar = trained
    written = json.loads((folder / "m.int8.onnx.json").read_text())
    assert written == sidecar
    assert written["precision"] == "int8" and written["stage"] == "qat"
    assert written["quantization"]["source"] == "qat" and written["quantization"]["format"] == "qdq"
    assert written["qat"]["epochs"] == 2 and len(written["qat"]["history"]) == 2
    assert written["parent"]["artifact"] == user_model[0].name
    assert written["sha256"] == sha256_of(folder / "m.int8.onnx")
    assert written["input"]["height"] == SIZE and written["model"]["num_classes"] > 1
    cache = parse_cache((folder / "m.calib.cache").read_text())
    for tensor, scale in _activation_scales(folder / "m.int8.onnx").items():
        np.testing.assert_allclose(cache[tensor], scale, rtol=1e-5)
    twin = json.loads((folder / "m.calib.onnx.json").read_text())
    assert any(name.endswith("/classifier/Conv") for name in twin["quantization"]["float_layers"])
    assert json.loads((folder / "m.onnx.json").read_text())["precision"] == "fp32"


def test_cli_from_a_state_dict_through_build_engine_and_bench(user_model, data, tmp_path, monkeypatch):
    from edgeseg.cli.main import cli
    from tests import trt_double

    weights, facts = user_model
    out = tmp_path / "user.int8.onnx"
    recipe = tmp_path / "recipe.yaml"  # the loop's options and qat's own, from a recipe as train takes them
    recipe.write_text("qat:\n  epochs: 1\n  batch-size: 4\n  method: minmax\n  num: 8\n")
    common = ["qat", str(weights), "--data", str(data), "--out", str(out), "--recipe", str(recipe),
              "--no-tensorboard"]
    refused = CliRunner().invoke(cli, common)  # a bare state_dict needs its architecture
    assert refused.exit_code != 0 and "--arch" in refused.output and "Traceback" not in refused.output
    facts_options = ["--arch", facts.arch, "--input-size", f"{SIZE}x{SIZE}"]
    result = CliRunner().invoke(cli, common + facts_options)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "user.int8.onnx.json").read_text())
    assert written["quantization"]["source"] == "qat" and written["qat"]["epochs"] == 1
    assert written["qat"]["selected_method"] == "minmax" and written["qat"]["num_images"] == 8
    assert written["qat"]["training"]["batch_size"] == 4
    # no --lr: a hundredth of train's AdamW rate (Wu et al. 2020; benchmarks/results/qat_lr_families.md)
    assert written["qat"]["training"]["lr"] == pytest.approx(1e-5)

    trt = trt_double.install(monkeypatch, "10.3.0")
    built = CliRunner().invoke(cli, ["build-engine", str(out), "--backend", "tensorrt", "--out",
                                     str(tmp_path / "user.engine"), "--timing-cache", "none"])
    assert built.exit_code == 0, built.output
    record = trt.engine_record(tmp_path / "user.engine")
    assert "INT8" in record["flags"] and record["calibration"] is None and record["pinned"] == {}
    engine_int8 = json.loads((tmp_path / "user.engine.json").read_text())["engine"]["int8"]
    assert engine_int8["quantized_by"] == "qat" and "edgeseg qat" in engine_int8["accuracy"]
    assert "calibrate" not in engine_int8["accuracy"] and "bias-corrected" not in engine_int8["accuracy"]

    trt = trt_double.install(monkeypatch, "8.5.2")  # implicit INT8: the cache on the trained FP32 graph
    built = CliRunner().invoke(cli, ["build-engine", str(tmp_path / "user.onnx"), "--int8", "--int8-source", "cache",
                                     "--backend", "tensorrt", "--out", str(tmp_path / "implicit.engine"),
                                     "--timing-cache", "none"])
    assert built.exit_code == 0, built.output
    record = trt.engine_record(tmp_path / "implicit.engine")
    assert record["calibration"]["cache_header"] == "TRT-8502-EntropyCalibration2"
    assert any("/classifier/Conv" in name for name in record["pinned"])
    engine_int8 = json.loads((tmp_path / "implicit.engine.json").read_text())["engine"]["int8"]
    assert engine_int8["quantized_by"] == "qat" and engine_int8["bias_corrected"] is False
    assert "qat's learned ranges" in engine_int8["accuracy"] and "trained by qat" in built.output
    monkeypatch.undo()

    json_out = tmp_path / "bench.json"
    benched = CliRunner().invoke(cli, ["bench", str(out), "--data", str(data), "--iters", "2", "--warmup", "1",
                                       "--json", str(json_out)])
    assert benched.exit_code == 0, benched.output
    assert "user.int8.onnx" in json_out.read_text()


def test_a_layer_kept_in_float_is_float_in_training_and_in_the_written_model(user_model, data, tmp_path):
    """--keep-float NODE: no fake quantisation reaches that node, and the written model feeds it no DequantizeLinear."""
    from edgeseg.quantization_aware import api

    weights, facts = user_model
    kept = "/net/block/block.3/Conv"
    start = api._calibrated_start(str(weights), tmp_path, str(data), None, "minmax", 99.99, 8, 0, False, (kept,),
                                  False, facts, 255)
    student, _ = api._models(start, learn_scales=True)
    assert not [key for key in list(student.placement.reads) + list(student.placement.weights) if key[0] == kept]
    out = tmp_path / "kept.int8.onnx"
    float_nodes = api._write(student, start, tmp_path, out, tmp_path / "kept.calib.cache", quantize_outputs=False)
    assert kept in float_nodes
    reads, _ = _layout(out)
    assert dict(((name, op), inputs) for name, op, inputs in reads)[(kept, "Conv")] == ()
    assert dict(((name, op), inputs) for name, op, inputs in reads)[("/net/block/block.0/Conv", "Conv")] == (0, 1)


def test_an_asymmetric_layout_is_refused(user_model, data, tmp_path):
    from edgeseg.errors import ConfigError
    from edgeseg.quant.qdq import write_qdq
    from edgeseg.quantization_aware import api
    from edgeseg.quantization_aware.placement import read_placement

    weights, facts = user_model
    start = api._calibrated_start(str(weights), tmp_path, str(data), None, "minmax", 99.99, 8, 0, False, (), False,
                                  facts, 255)
    assert read_placement(onnx.load(str(start["qdq"]))).constants  # the 0.75, read as the Q/DQ model stores it
    write_qdq(start["fp32"], tmp_path / "asym.onnx", start["ranges"], symmetric=False)
    with pytest.raises(ConfigError, match="QAT trains symmetric INT8 .zero points 0, what TensorRT takes.; this Q/DQ "
                                          "model is asymmetric"):
        read_placement(onnx.load(str(tmp_path / "asym.onnx")))


def test_bad_options_are_one_sentence(user_model, data, tmp_path):
    from edgeseg.cli.main import cli

    weights, facts = user_model
    common = ["qat", str(weights), "--data", str(data), "--arch", facts.arch, "--input-size", f"{SIZE}x{SIZE}",
              "--epochs", "1", "--batch-size", "4", "--num", "8", "--method", "minmax", "--no-tensorboard",
              "--out", str(tmp_path / "x.int8.onnx")]
    for extra, words in ((["--keep-float", "/nothing/Conv"], "--keep-float /nothing/Conv is no node"),
                         (["--resume"], "--resume found no QAT state"),
                         (["--temperature", "0"], "--temperature > 0")):
        result = CliRunner().invoke(cli, common + extra)
        assert result.exit_code != 0 and words in result.output, result.output
        error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert "Traceback" not in result.output and len(error) == 1 and words in error[0], result.output
    (tmp_path / "x.onnx").write_bytes(b"an export of the same model")  # qat's <base>.onnx would overwrite it
    result = CliRunner().invoke(cli, common)
    assert result.exit_code != 0 and "qat writes its trained FP32 graph to x.onnx, which exists and is not qat's; " \
        "choose another --out (e.g. x.qat.int8.onnx) or move x.onnx." in result.output
    assert (tmp_path / "x.onnx").read_bytes() == b"an export of the same model"


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo(user_model, data, tmp_path):
    """DDP: two processes share each epoch; one writer (one log row per epoch) and only rank 0 talks."""
    import csv
    import os
    import subprocess
    import sys

    weights, facts = user_model
    out = tmp_path / "ddp.int8.onnx"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
               "-m", "edgeseg.cli", "qat", str(weights), "--arch", facts.arch, "--input-size", f"{SIZE}x{SIZE}",
               "--data", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "2", "--method", "minmax",
               "--val-every", "1", "--no-tensorboard"]
    done = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(Path(str(out) + ".log.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"] and all(row["val_miou"] for row in rows)
    assert done.stderr.count("QAT of ") == 1 and done.stderr.count("Calibrating ") == 1
    assert json.loads((tmp_path / "ddp.int8.onnx.json").read_text())["qat"]["epochs"] == 2


@pytest.mark.parametrize("arch", ["mobilenetv3-small", "segformer-b0", "enet"])
def test_the_graph_runner_computes_what_onnx_runtime_computes(arch, tmp_path):
    """QAT trains the exported ONNX graph run by torch ops: for families whose graphs hold HardSwish, squeeze-excite
    gates, PRelu, attention (MatMul, Softmax, LayerNormalization, Erf) and shape arithmetic, its logits are ONNX
    Runtime's."""
    import onnxruntime as ort

    from edgeseg.arch import create_model
    from edgeseg.exporting.api import export_onnx, simplify
    from edgeseg.quantization_aware.graph import OnnxGraph

    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    export_onnx(create_model(arch, 5).eval(), path, 64, 64, 17)
    simplify(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = OnnxGraph(onnx.load(str(path))).eval()(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (2, 5, 64, 64)
    np.testing.assert_allclose(got, expected, atol=1e-5 * max(1.0, float(np.abs(expected).max())), rtol=1e-4)


def test_an_op_the_runner_lacks_is_refused_in_one_sentence():
    from onnx import TensorProto, helper

    from edgeseg.errors import ConfigError
    from edgeseg.quantization_aware.graph import OnnxGraph

    graph = helper.make_graph([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    with pytest.raises(ConfigError, match="it has Einsum, which edgeseg's graph runner does not implement"):
        OnnxGraph(helper.make_model(graph))


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_weight_rounding_is_onnx_runtimes(axis):
    """The fake-quantised weight equals ONNX Runtime's own symmetric INT8 quantisation of it (quantize_data),
    per tensor or per channel, an all-zero channel included; the gradient passes straight through."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    from edgeseg.quantization_aware.fake_quant import fake_quantize_weight

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * np.array([0.01, 0.3, 2.0, 1.0],
                                                                               dtype=np.float32)[:, None, None, None]
    weight[3] = 0.0  # a channel pruned to nothing: ONNX Runtime's scale 1.0, not a division by zero
    parts = [weight] if axis is None else [np.take(weight, i, axis=axis) for i in range(weight.shape[axis])]
    expected = []
    for part in parts:
        _zero, scale, quantized = quantize_data(part.ravel(), TensorProto.INT8, True)
        expected.append((np.asarray(quantized, np.float32) * np.float32(scale)).reshape(part.shape))
    expected = expected[0] if axis is None else np.stack(expected, axis=axis)
    tensor = torch.from_numpy(weight).requires_grad_(True)
    rounded = fake_quantize_weight(tensor, axis)
    np.testing.assert_array_equal(rounded.detach().numpy(), expected)
    rounded.sum().backward()
    np.testing.assert_array_equal(tensor.grad.numpy(), np.ones_like(weight))


def test_a_learned_scale_gets_lsqs_gradient():
    """d(sum of outputs)/d(factor) = initial scale x grad scale x sum of (round(x/s) - x/s) inside the range and
    of the clipping bound outside it (Esser et al. 2020), with grad scale 1/sqrt(elements x 127)."""
    from edgeseg.quantization_aware.fake_quant import ActivationQuantizer

    scale = 0.02
    x = torch.linspace(-3.0, 3.0, 301)
    quantizer = ActivationQuantizer(scale, learn=True)
    out = quantizer(x)
    np.testing.assert_allclose(out.detach().numpy(), np.clip(np.round(x.numpy() / scale), -128, 127) * scale,
                               atol=1e-7)
    out.sum().backward()
    v = x.numpy().astype(np.float64) / scale
    inside = np.where(v < -128, -128.0, np.where(v > 127, 127.0, np.round(v) - v))
    expected = scale * inside.sum() / np.sqrt(x.numel() * 127)
    np.testing.assert_allclose(float(quantizer.factor.grad), expected, rtol=1e-4)
    fixed = ActivationQuantizer(scale, learn=False)
    assert not list(fixed.parameters())
    np.testing.assert_array_equal(fixed(x).numpy(), out.detach().numpy())


def test_train_and_distill_take_the_training_options_whole_or_as_keywords(data, tmp_path):
    """One TrainConfig (what qat takes) trains the same weights as the keywords it replaces; both at once is refused."""
    from edgeseg.checkpoint import load_model
    from edgeseg.distillation.api import distill
    from edgeseg.errors import ConfigError
    from edgeseg.training.api import train

    tiny = {"arch_args": {"base_channels": 4, "encoder_depth": 2}}
    train("unet", str(data), str(tmp_path / "a.pt"), epochs=1, batch_size=4, lr=0.01, seed=3, tensorboard=False,
          **tiny)
    sidecar = train("unet", str(data), str(tmp_path / "b.pt"), **tiny,
                    training=TrainConfig(epochs=1, batch_size=4, lr=0.01, seed=3, tensorboard=False))
    a, b = load_model(tmp_path / "a.pt").model.state_dict(), load_model(tmp_path / "b.pt").model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert sidecar["training"]["config"]["lr"] == 0.01 and sidecar["training"]["config"]["seed"] == 3
    with pytest.raises(ConfigError, match=r"Give the training options once: training=TrainConfig\(...\) or the "
                                          r"keywords \(epochs, lr\), not both\."):
        train("unet", str(data), str(tmp_path / "c.pt"), epochs=2, lr=0.5, training=TrainConfig(epochs=1), **tiny)
    student = dict(student="unet", student_args={"base_channels": 4, "encoder_depth": 2})
    distill(str(tmp_path / "a.pt"), str(data), str(tmp_path / "s1.pt"), epochs=1, batch_size=4, seed=5,
            tensorboard=False, **student)
    distill(str(tmp_path / "a.pt"), str(data), str(tmp_path / "s2.pt"), **student,
            training=TrainConfig(epochs=1, batch_size=4, seed=5, tensorboard=False))
    s1, s2 = load_model(tmp_path / "s1.pt").model.state_dict(), load_model(tmp_path / "s2.pt").model.state_dict()
    assert all(torch.equal(s1[name], s2[name]) for name in s1)


def test_prune_fine_tunes_with_one_training_options_object(data, tmp_path):
    """prune(finetune=TrainConfig(...)) fine-tunes exactly as the keywords it replaces; both epochs at once are refused."""
    from edgeseg.checkpoint import load_model
    from edgeseg.errors import ConfigError
    from edgeseg.pruning.api import prune
    from edgeseg.training.api import train

    model = tmp_path / "m.pt"
    train("unet", str(data), str(model), epochs=1, batch_size=4, tensorboard=False,
          arch_args={"base_channels": 8, "encoder_depth": 2})
    common = dict(ratio=0.25, data=str(data))
    prune(str(model), str(tmp_path / "a.pt"), finetune_epochs=1, batch_size=4, lr=0.002, seed=1, **common)
    prune(str(model), str(tmp_path / "b.pt"), **common,
          finetune=TrainConfig(epochs=1, batch_size=4, lr=0.002, seed=1, val_every=1, tensorboard=False))
    a, b = load_model(tmp_path / "a.pt").model.state_dict(), load_model(tmp_path / "b.pt").model.state_dict()
    before = load_model(model).model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert any(a[name].shape != before[name].shape for name in a)  # it did prune
    assert load_model(tmp_path / "b.pt").meta["prune"]["finetune_epochs"] == 1
    with pytest.raises(ConfigError, match=r"Give the fine-tuning's epochs once: finetune=TrainConfig\(epochs=...\) "
                                          r"or finetune_epochs, not both\."):
        prune(str(model), str(tmp_path / "c.pt"), finetune_epochs=2, finetune=TrainConfig(epochs=1), **common)
