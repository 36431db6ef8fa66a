"""edgeseg calibrate end to end on a 3-conv ONNX built here and a handful of tiny images (no session fixtures).

References computed in the test: each tensor's range from ONNX Runtime runs of the FP32
model on the same pre-processed images, the cache's hex floats decoded back to amax/127,
the Q/DQ scales against those ranges, the biases against the shifts measured, the mIoU
figures against onnx_miou of Q/DQ models written here with the same ranges.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch  # noqa: F401  (bias correction measures in torch: imported once at collection, not in a test)
from onnx import TensorProto, helper, numpy_helper

from edgeseg.errors import ConfigError, DataError, InputFileError
from edgeseg.spec import ModelFacts

@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Each test runs in its own folder: a file written at a wrong relative path lands there, not in the next test's."""
    monkeypatch.chdir(tmp_path)

TENSORS = ["input", "h", "r", "h2", "r2", "logits"]


def _model(path: Path, classes: int = 2, seed: int = 0, height: int = 8, width: int = 12) -> Path:
    """input -> Conv (bias) -> h -> Relu -> r -> Conv (no bias) -> h2 -> Relu -> r2 -> Conv head -> logits."""
    rng = np.random.default_rng(seed)
    init = {"w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3,
            "b1": rng.standard_normal(4).astype(np.float32),
            "w2": rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3,
            "w3": rng.standard_normal((classes, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["h2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         ["batch", 3, height, width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["batch", classes, height, width])],
                              [numpy_helper.from_array(a, n) for n, a in init.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _images(folder: Path, count: int, seed: int = 0) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def _activations(model: Path, files, spec) -> dict:
    """{tensor: every value it takes on ``files``}, from ONNX Runtime with each tensor made an output."""
    import onnxruntime as ort

    from edgeseg.data.images import read_image
    from edgeseg.runtime.preprocess import preprocess

    m = onnx.load(str(model))
    for name in TENSORS[1:-1]:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    values = {name: [] for name in TENSORS}
    for f in files:
        batch = preprocess(read_image(f), spec)
        values["input"].append(batch.ravel())
        for name, value in zip(outputs, session.run(outputs, {"input": batch})):
            values[name].append(value.ravel())
    return values


def _histogram(per_image):
    """A StreamingHistogram fed image by image, as calibrate feeds it (its range grows between images)."""
    from edgeseg.quant.histogram import StreamingHistogram

    h = StreamingHistogram()
    for value in per_image:
        h.update(value)
    return h


def _quantize_scales(path: Path) -> dict:
    model = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: (float(init[n.input[1]]), init[n.input[2]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear"}


def _biases(path: Path) -> dict:
    from edgeseg.quant.qdq import ensure_node_names

    model = onnx.load(str(path))
    ensure_node_names(model)
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.name: init[n.input[2]] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2}


@pytest.fixture
def spy_shifts(monkeypatch):
    import edgeseg.quant.conv_error as conv_error

    measured = []
    real = conv_error.measure_shifts

    def spy(*args, **kwargs):
        measured.append(real(*args, **kwargs))
        return measured[-1]

    monkeypatch.setattr(conv_error, "measure_shifts", spy)
    return measured


def test_minmax_calibration_writes_the_measured_ranges_everywhere(tmp_path, spy_shifts):
    from edgeseg.engine.trt_rules import ALL_TARGETS, check_for_tensorrt
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.trt_cache import parse_cache
    from edgeseg.sidecar import read_sidecar
    from edgeseg.spec import InputSpec

    model = _model(tmp_path / "m.onnx")
    images = _images(tmp_path / "imgs", 3)
    meta = calibrate(str(model), str(images), method="minmax", num=5, facts=ModelFacts(num_classes=2))
    values = {name: np.concatenate(v) for name, v in
              _activations(model, sorted(images.iterdir()), InputSpec(height=8, width=12)).items()}
    ranges = json.loads((tmp_path / "m.ranges.json").read_text())
    assert set(ranges["tensors"]) == set(TENSORS)
    for name in TENSORS:
        amax = float(np.abs(values[name]).max())
        got = ranges["tensors"][name]
        assert got["amax"] == pytest.approx(amax, rel=1e-6), name
        assert got["min"] == pytest.approx(float(values[name].min()), rel=1e-6)
        assert got["max"] == pytest.approx(float(values[name].max()), rel=1e-6)
        assert (got["low"], got["high"]) == (-got["amax"], got["amax"])
    # the cache: TensorRT 8.5.2's header, each scale amax / 127
    cache = (tmp_path / "m.calib.cache").read_text()
    assert cache.splitlines()[0] == "TRT-8502-MinMaxCalibration"
    scales = parse_cache(cache)
    assert set(scales) == set(TENSORS)
    for name in TENSORS:
        assert scales[name] == pytest.approx(ranges["tensors"][name]["amax"] / 127, rel=1e-6)
    # the Q/DQ model: scales from the same ranges; the head (Conv_4) reads in float
    written = _quantize_scales(tmp_path / "m.int8.onnx")
    assert set(written) == {"input", "r"}
    for name, (scale, zero) in written.items():
        assert scale == pytest.approx(ranges["tensors"][name]["amax"] / 127, rel=1e-6) and zero == 0
        assert zero.dtype == np.int8
    assert all(check_for_tensorrt(str(tmp_path / "m.int8.onnx"), v) == [] for v in ALL_TARGETS)
    # biases: FP32 minus the measured shift in the Q/DQ model and in its FP32 twin; the head's stays
    assert len(spy_shifts) == 1
    shifts = {conv: by_method["minmax"] for conv, by_method in spy_shifts[0].items()}
    assert set(shifts) == {"Conv_0", "Conv_2"} and set(spy_shifts[0]["Conv_0"]) == {"minmax"}
    fp32, qdq, twin = (_biases(tmp_path / n) for n in ("m.onnx", "m.int8.onnx", "m.calib.onnx"))
    np.testing.assert_allclose(qdq["Conv_0"], fp32["Conv_0"] - shifts["Conv_0"], atol=1e-6)
    np.testing.assert_allclose(qdq["Conv_2"], -shifts["Conv_2"], atol=1e-6)  # a bias where it had none
    np.testing.assert_array_equal(twin["Conv_0"], qdq["Conv_0"])
    assert "Conv_4" not in qdq and "Conv_4" not in twin
    assert ranges["image_files"] == ["im0.png", "im1.png", "im2.png"]
    settings = {"method": "minmax", "selected_method": "minmax", "argmax_agreement_percent": None,
                "percentile": None, "symmetric": True, "bias_correction": True, "bias_corrected_layers": 2,
                "quantize_outputs": False, "num_images": 3, "seed": 0, "images": str(images)}
    assert {k: v for k, v in ranges.items() if k not in ("tensors", "image_files")} == settings
    assert meta["precision"] == "int8" and meta["stage"] == "calibrate"
    assert meta["quantization"] == dict(settings, format="qdq", weights="per-channel symmetric int8",
                                        float_nodes=["Conv_4"], fallback_layers=[], calibration_cache="m.calib.cache",
                                        ranges="m.ranges.json")
    assert read_sidecar(tmp_path / "m.int8.onnx")["quantization"] == meta["quantization"]
    assert meta.get("accuracy") is None and meta["model"] == {"arch": "onnx", "num_classes": 2}
    assert meta["input"]["height"] == 8 and meta["input"]["width"] == 12
    twin_meta = read_sidecar(tmp_path / "m.calib.onnx")
    assert twin_meta["precision"] == "fp32" and twin_meta["stage"] == "calibrate"
    assert twin_meta["quantization"] == {"format": "fp32 twin for TensorRT implicit INT8",
                                         "calibration_cache": "m.calib.cache", "bias_corrected_layers": 2,
                                         "float_layers": ["Conv_4"]}
    assert twin_meta["input"] == meta["input"] and twin_meta["model"] == meta["model"]


def test_percentile_asymmetric_calibration_clips_the_observed_interval(tmp_path):
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.trt_cache import parse_cache
    from edgeseg.spec import InputSpec

    model = _model(tmp_path / "m.onnx", seed=1)
    images = _images(tmp_path / "imgs", 2, seed=1)
    out = tmp_path / "out" / "custom.onnx"
    out.parent.mkdir()
    meta = calibrate(str(model), str(images), str(out), method="percentile", percentile=90.0, num=2,
                     symmetric=False, bias_correction=False, facts=ModelFacts(num_classes=2))
    assert sorted(p.name for p in out.parent.iterdir()) == ["custom.calib.cache", "custom.calib.onnx",
                                                            "custom.calib.onnx.json", "custom.onnx",
                                                            "custom.onnx.json", "custom.ranges.json"]
    values = _activations(model, sorted(images.iterdir()), InputSpec(height=8, width=12))
    ranges = json.loads((out.parent / "custom.ranges.json").read_text())
    assert ranges["percentile"] == 90.0 and ranges["symmetric"] is False and ranges["bias_corrected_layers"] == 0
    scales = parse_cache((out.parent / "custom.calib.cache").read_text())
    for name in TENSORS:
        amax = _histogram(values[name]).amax("percentile", 90.0)
        every = np.concatenate(values[name])
        got = ranges["tensors"][name]
        assert got["amax"] == pytest.approx(amax, rel=1e-6) and amax < np.abs(every).max()
        assert got["low"] == pytest.approx(max(float(every.min()), -amax), rel=1e-6)
        assert got["high"] == pytest.approx(min(float(every.max()), amax), rel=1e-6)
        assert scales[name] == pytest.approx(amax / 127, rel=1e-6)
    assert (out.parent / "custom.calib.cache").read_text().startswith("TRT-8502-EntropyCalibration2\n")
    for name, (scale, zero) in _quantize_scales(out).items():  # uint8 over [min(low, 0), max(high, 0)]
        low, high = min(ranges["tensors"][name]["low"], 0), max(ranges["tensors"][name]["high"], 0)
        assert zero.dtype == np.uint8 and scale == pytest.approx((high - low) / 255, rel=1e-5)
        assert int(zero) == round(-low / ((high - low) / 255))
    assert meta["quantization"]["calibration_cache"] == "custom.calib.cache"
    np.testing.assert_array_equal(_biases(out)["Conv_0"], _biases(model)["Conv_0"])


def test_auto_picks_the_method_whose_argmax_agrees_most(tmp_path):
    from edgeseg.quant.api import calibrate
    from edgeseg.spec import InputSpec

    model = _model(tmp_path / "m.onnx", classes=3, seed=2)
    images = _images(tmp_path / "imgs", 2, seed=2)
    meta = calibrate(str(model), str(images), num=2, bias_correction=False, facts=ModelFacts(num_classes=3))
    q = meta["quantization"]
    agreement = q["argmax_agreement_percent"]
    assert list(agreement) == ["minmax", "percentile", "entropy", "mse"]
    assert q["method"] == "auto" and q["selected_method"] == max(agreement, key=agreement.get)
    assert all(0 < a <= 100 for a in agreement.values()) and len(set(agreement.values())) > 1
    values = _activations(model, sorted(images.iterdir()), InputSpec(height=8, width=12))
    ranges = json.loads((tmp_path / "m.ranges.json").read_text())
    for name in TENSORS:
        assert ranges["tensors"][name]["amax"] == pytest.approx(_histogram(values[name]).amax(q["selected_method"],
                                                                                             99.99), rel=1e-6)
    assert q["percentile"] == (99.99 if q["selected_method"] == "percentile" else None)


def test_calibration_images_sample_with_the_seed(tmp_path):
    from edgeseg.quant.api import calibration_images

    flat = _images(tmp_path / "flat", 6)
    files = sorted(flat.iterdir())
    picks = sorted(np.random.default_rng(3).choice(6, size=4, replace=False))
    assert calibration_images(flat, 4, 3) == [files[i] for i in picks]
    assert calibration_images(str(flat), 6, 3) == files and calibration_images(flat, 9, 3) == files
    _images(tmp_path / "split" / "images", 2)
    assert [p.name for p in calibration_images(tmp_path / "split", 5, 0)] == ["im0.png", "im1.png"]
    _images(tmp_path / "data" / "train" / "images", 3)
    assert [p.parent for p in calibration_images(tmp_path / "data", 5, 0)] == [tmp_path / "data" / "train" / "images"] * 3
    with pytest.raises(DataError, match=f"Calibration folder {tmp_path / 'nope'} does not exist; give a folder"):
        calibration_images(tmp_path / "nope", 4, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images .* add some from your deployment domain"):
        calibration_images(tmp_path / "empty", 4, 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "kl"}, "Unknown calibration method 'kl'; choose one of: auto, minmax, percentile, entropy, mse."),
    ({"percentile": 0.0}, r"--percentile must be in \(0, 100\], got 0.0."),
    ({"percentile": 100.5}, r"--percentile must be in \(0, 100\], got 100.5."),
    ({"num": 0}, "--num must be at least 1, got 0."),
    ({"max_miou_drop": 1.0}, "--max-miou-drop and --report need labelled --data to measure mIoU on."),
    ({"report": True}, "--max-miou-drop and --report need labelled --data"),
    ({"max_miou_drop": -0.5, "data": "somewhere"}, "--max-miou-drop must be >= 0, got -0.5."),
])
def test_calibrate_refuses_bad_settings_before_reading_anything(kwargs, message, tmp_path):
    from edgeseg.quant.api import calibrate

    model = _model(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=message):
        calibrate(str(model), str(tmp_path / "no-images"), **kwargs)


def test_calibrate_refuses_an_int8_model_and_takes_percentile_100(tmp_path):
    from edgeseg.quant.api import calibrate
    from edgeseg.sidecar import read_sidecar

    model = _model(tmp_path / "m.onnx")
    images = _images(tmp_path / "imgs", 1)
    meta = calibrate(str(model), str(images), method="percentile", percentile=100.0, num=1, bias_correction=False,
                     facts=ModelFacts(num_classes=2))
    assert meta["quantization"]["percentile"] == 100.0 and meta["quantization"]["num_images"] == 1
    assert read_sidecar(tmp_path / "m.int8.onnx")["precision"] == "int8"
    with pytest.raises(InputFileError, match="m.int8.onnx is already int8; calibrate the FP32 ONNX model instead."):
        calibrate(str(tmp_path / "m.int8.onnx"), str(images), num=1)


def test_spread_and_range():
    from edgeseg.quant.api import _range, _spread
    from edgeseg.quant.histogram import StreamingHistogram

    files = list(range(10))
    assert _spread(files, 3) == [0, 3, 6] and _spread(files, 20) == files and _spread(files, 10) == files
    assert _spread(files[:3], 1) == [0]
    h = StreamingHistogram()
    h.update(np.array([-1.0, 5.0]))
    assert _range(h, 2.0, True) == (-2.0, 2.0)
    assert _range(h, 2.0, False) == (-1.0, 2.0) and _range(h, 6.0, False) == (-1.0, 5.0)
    assert _range(h, 0.5, False) == (-0.5, 0.5)


def test_a_class_map_model_is_measured_on_its_logits(tmp_path):
    from edgeseg.exporting.argmax import add_class_map_file
    from edgeseg.quant.api import _logits_model

    model = _model(tmp_path / "m.onnx")
    assert _logits_model(model) == (model, None, None)
    add_class_map_file(model, "int32")
    logits, dtype, folder = _logits_model(model)
    assert dtype == "int32" and logits.exists() and Path(folder.name) == logits.parent
    stripped = onnx.load(str(logits))
    assert [o.name for o in stripped.graph.output] == ["logits"] and len(stripped.graph.node) == 5
    folder.cleanup()


def _dataset(tmp_path):
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset

    return write_dataset(tmp_path / "data", SyntheticConfig(seed=4, num_train=2, num_val=4, height=8, width=12))


def test_accuracy_figures_are_the_miou_of_the_written_models_on_each_half(tmp_path, capsys):
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.qdq import write_qdq
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.spec import InputSpec

    data = _dataset(tmp_path)
    model = _model(tmp_path / "m.onnx", classes=8, seed=5)
    meta = calibrate(str(model), str(data / "train" / "images"), method="minmax", num=2, bias_correction=False,
                     data=str(data), max_miou_drop=0.0, report=True, sensitivity_images=2,
                     facts=ModelFacts(num_classes=8))
    acc = meta["accuracy"]
    ranges = {n: (t["low"], t["high"]) for n, t in json.loads((tmp_path / "m.ranges.json").read_text())["tensors"].items()}
    pick, held_out = load_eval_set(str(data), InputSpec(height=8, width=12)).halves()

    def int8_miou(float_layers, evalset):
        path = tmp_path / f"check-{len(float_layers)}-{'-'.join(float_layers)}.onnx"
        write_qdq(model, path, ranges, nodes_to_exclude=float_layers)
        return onnx_miou(path, evalset)

    assert acc["data"] == str(data) and acc["num_images"] == 4 and acc["max_miou_drop"] == 0.0
    assert acc["split"]["pick"]["images"] == "1-2" and acc["split"]["pick"]["count"] == 2
    assert acc["split"]["report"]["images"] == "3-4" and acc["split"]["report"]["count"] == 2
    assert acc["fp32_miou"] == onnx_miou(model, held_out)
    assert acc["int8_miou_all_layers"] == int8_miou([], held_out)
    assert acc["int8_miou"] == int8_miou(meta["quantization"]["fallback_layers"], held_out)
    assert acc["miou_drop"] == round(acc["fp32_miou"] - acc["int8_miou"], 4)
    assert acc["within_budget"] is (acc["miou_drop"] <= 0.0)
    assert acc["pick_miou"]["fp32"] == onnx_miou(model, pick)
    assert acc["pick_miou"]["int8_all_layers"] == int8_miou([], pick)
    sensitivity = {row["layer"]: row["miou_with_layer_in_float"] for row in acc["sensitivity"]}
    assert set(sensitivity) == {"Conv_0", "Conv_2"} and all(row["images"] == 2 for row in acc["sensitivity"])
    for layer, miou in sensitivity.items():
        assert miou == int8_miou([layer], pick)
    assert [row["miou_with_layer_in_float"] for row in acc["sensitivity"]] == sorted(sensitivity.values(), reverse=True)
    fallback = meta["quantization"]["fallback_layers"]
    steps = acc.get("fallback_steps", [])
    assert [s["added"] for s in steps] == fallback and [s["float_layers"] for s in steps] == list(range(1, len(fallback) + 1))
    assert acc["pick_miou"]["int8"] == (steps[-1]["miou"] if steps else acc["pick_miou"]["int8_all_layers"])
    assert meta["quantization"]["float_nodes"] == ["Conv_4"] + fallback
    captured = capsys.readouterr()
    printed = " ".join((captured.out + captured.err).split())
    pick_fp32, pick_all, pick_final = (acc["pick_miou"][k] for k in ("fp32", "int8_all_layers", "int8"))
    drop = acc["miou_drop"]
    for sentence in (
            f"Picking float layers on val images 1-2 of {data}; reporting on images 3-4, which picking never sees",
            f"mIoU on the 2 pick images: FP32 {pick_fp32:.2f}%, INT8 {pick_all:.2f}% (drop {pick_fp32 - pick_all:.2f})",
            f"mIoU on the 2 report images: FP32 {acc['fp32_miou']:.2f}%, INT8 {acc['int8_miou_all_layers']:.2f}% with "
            f"every layer" + (f", {acc['int8_miou']:.2f}% with {len(fallback)} in float" if fallback else "")
            + f" (drop {drop:.2f}, budget 0.0: {'within' if drop <= 0.0 else 'OVER'})"):
        assert sentence in printed, sentence
    if pick_fp32 - pick_all > 0.0:
        over = "" if pick_fp32 - pick_final <= 0.0 else " - still over with every layer tried"
        assert (f"{len(fallback)} layer(s) kept in float: INT8 mIoU {pick_final:.2f}% on the pick images "
                f"(drop {pick_fp32 - pick_final:.2f}, budget 0.0){over}") in printed
    assert f"Per-layer INT8 sensitivity (all layers INT8: {int8_miou([], pick.subset(2)):.2f}% mIoU)" in printed


def test_the_sensitivity_table_ranks_layers_with_their_gain(capsys):
    from edgeseg.quant.api import _print_sensitivity

    _print_sensitivity([("Conv_2", 51.256), ("block.conv", 39.5)], 40.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].strip() == "Per-layer INT8 sensitivity (all layers INT8: 40.00% mIoU)"
    rows = [[cell for cell in line.split("\u2502")[1:-1]] for line in lines if line.count("\u2502") == 5]
    header = [line for line in lines if "rank" in line][0].split("\u2503")[1:-1]
    assert [cell.strip() for cell in header] == ["rank", "layer", "mIoU with this layer in float", "gain"]
    assert [[cell.strip() for cell in row] for row in rows] == [["1", "Conv_2", "51.26", "+11.26"],
                                                                 ["2", "block.conv", "39.50", "-0.50"]]
    for row in rows:  # numbers right-aligned, the layer name left-aligned (each column has a narrower cell)
        for index in (0, 2, 3):
            assert row[index] == row[index].strip().rjust(len(row[index]) - 1) + " ", row
        assert row[1] == " " + row[1].strip().ljust(len(row[1]) - 1), row
    assert rows[1][3] == "  -0.50 " and rows[0][1] == " Conv_2     "


def test_without_a_budget_every_image_is_a_report_image(tmp_path, capsys):
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.qdq import write_qdq
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.spec import InputSpec

    data = _dataset(tmp_path)
    model = _model(tmp_path / "m.onnx", classes=8, seed=6)
    meta = calibrate(str(model), str(data / "train" / "images"), method="minmax", num=2, bias_correction=False,
                     data=str(data), max_images=3, facts=ModelFacts(num_classes=8))
    acc = meta["accuracy"]
    ranges = {n: (t["low"], t["high"]) for n, t in json.loads((tmp_path / "m.ranges.json").read_text())["tensors"].items()}
    evalset = load_eval_set(str(data), InputSpec(height=8, width=12), 3)
    write_qdq(model, tmp_path / "check.onnx", ranges)
    int8 = onnx_miou(tmp_path / "check.onnx", evalset)
    assert acc == {"data": str(data), "num_images": 3, "max_miou_drop": None,
                   "split": {"report": {"images": "1-3", "count": 3, "figures": "all of them (no layers were picked)"}},
                   "fp32_miou": onnx_miou(model, evalset), "int8_miou_all_layers": int8, "int8_miou": int8,
                   "miou_drop": round(onnx_miou(model, evalset) - int8, 4)}
    captured = capsys.readouterr()
    assert (f"mIoU on all 3 images of {data}: FP32 {acc['fp32_miou']:.2f}%, INT8 {int8:.2f}% "
            f"(drop {acc['fp32_miou'] - int8:.2f})") in " ".join((captured.out + captured.err).split())
    with pytest.raises(ConfigError, match="so --data needs at least 2 labelled images; .* has 1."):
        calibrate(str(model), str(data / "train" / "images"), method="minmax", num=1, bias_correction=False,
                  data=str(data), max_images=1, report=True, facts=ModelFacts(num_classes=8))
