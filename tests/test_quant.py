import json
import struct

import numpy as np
import onnx
import pytest

from edgeseg.errors import DataError
from edgeseg.quant.histogram import StreamingHistogram, entropy_amax, mse_amax, percentile_amax
from edgeseg.quant.qdq import logits_nodes
from edgeseg.quant.trt_cache import format_cache, parse_cache


def test_histogram_growth_keeps_every_count():
    h = StreamingHistogram(num_bins=64)
    h.update(np.array([0.5, -1.0]))
    h.update(np.array([3.9, -7.5, 0.1]))
    assert h.counts.sum() == 5 and h.range >= 7.5
    assert h.min == -7.5 and h.max == pytest.approx(3.9)
    assert h.amax("minmax") == 7.5


def test_percentile_threshold_on_uniform_data():
    counts = np.ones(1000, dtype=np.int64)
    assert percentile_amax(counts, 0.01, 99.0) == pytest.approx(9.91, abs=0.02)


def test_entropy_clips_long_tails():
    rng = np.random.default_rng(0)
    h = StreamingHistogram()
    values = rng.standard_normal(200_000)
    values[:5] = 60.0  # a few outliers must not set the range
    h.update(values)
    assert 2.0 < h.amax("entropy") < 20.0
    assert h.amax("minmax") == pytest.approx(60.0)


def _quantisation_error(values, amax):
    step = amax / 127
    return float(np.sum((values - np.clip(np.round(values / step), -127, 127) * step) ** 2))


def test_mse_threshold_beats_minmax_and_percentile_on_heavy_tails():
    rng = np.random.default_rng(1)
    values = rng.laplace(size=100_000)
    h = StreamingHistogram()
    h.update(values)
    chosen = h.amax("mse")
    assert chosen < h.amax("minmax")
    for other in (h.amax("minmax"), h.amax("percentile", 99.0), 0.5 * chosen):
        assert _quantisation_error(values, chosen) <= _quantisation_error(values, other) * 1.01


def test_entropy_of_a_narrow_histogram_keeps_everything():
    counts = np.zeros(2048, dtype=np.int64)
    counts[:100] = 10
    assert entropy_amax(counts, 1.0) == 100.0
    assert mse_amax(counts, 1.0) <= 100.0


def test_calibration_cache_format_round_trip():
    text = format_cache({"input": 2.54, "conv_out": 12.7}, "entropy")
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    name, hex_scale = lines[1].split(": ")
    assert name == "input" and struct.unpack(">f", bytes.fromhex(hex_scale))[0] == pytest.approx(0.02)
    assert parse_cache(text)["conv_out"] == pytest.approx(0.1)
    assert format_cache({"x": 1.0}, "minmax").startswith("TRT-8601-MinMaxCalibration")


def test_calibrate_writes_qdq_cache_and_ranges(tiny_int8, tiny_onnx, tiny_data):
    import onnxruntime as ort

    model = onnx.load(str(tiny_int8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the logits stay in float: no tensor on the path to the output is quantised
    float_nodes = set(logits_nodes(onnx.load(str(tiny_onnx))))
    meta = json.loads(tiny_int8.with_name("student.int8.onnx.json").read_text())
    assert meta["precision"] == "int8" and set(meta["quantization"]["float_nodes"]) == float_nodes
    producers = {o: n for n in model.graph.node for o in n.output}
    assert producers[model.graph.output[0].name].op_type != "DequantizeLinear"
    session = ort.InferenceSession(str(tiny_int8), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((1, 3, 64, 64), np.float32)})[0].shape == (1, 8, 64, 64)
    cache = tiny_int8.with_name("student.calib.cache").read_text().splitlines()
    ranges = json.loads(tiny_int8.with_name("student.ranges.json").read_text())
    assert cache[0].startswith("TRT-") and len(cache) - 1 == len(ranges["tensors"])
    assert "input" in ranges["tensors"] and ranges["method"] == "mse" and ranges["bias_correction"] is True


def test_calibration_is_deterministic(tiny_onnx, tiny_data, tmp_path):
    from edgeseg.quant.api import calibrate

    for name in ("a", "b"):
        calibrate(str(tiny_onnx), str(tiny_data), str(tmp_path / f"{name}.int8.onnx"), num=4, seed=5,
                  method="entropy")
    a = json.loads((tmp_path / "a.ranges.json").read_text())["tensors"]
    b = json.loads((tmp_path / "b.ranges.json").read_text())["tensors"]
    assert a == b


def test_empty_calibration_folder(tiny_onnx, tmp_path):
    from edgeseg.quant.api import calibrate

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        calibrate(str(tiny_onnx), str(tmp_path / "empty"), str(tmp_path / "x.int8.onnx"))
    assert not (tmp_path / "x.int8.onnx").exists()


def test_accuracy_budget_keeps_sensitive_layers_in_float(tiny_teacher, tiny_data, tmp_path, capsys):
    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate

    fp32 = tmp_path / "unet.onnx"  # a U-Net has few layers, which keeps the many re-quantisations quick
    export(str(tiny_teacher), str(fp32), data=str(tiny_data))
    out = tmp_path / "b.int8.onnx"
    meta = calibrate(str(fp32), str(tiny_data), str(out), num=4, data=str(tiny_data), max_miou_drop=0.0,
                     report=True, method="minmax")
    accuracy = meta["accuracy"]
    assert "Per-layer INT8 sensitivity" in capsys.readouterr().out
    ranking = [row["miou_with_layer_in_float"] for row in accuracy["sensitivity"]]
    assert ranking == sorted(ranking, reverse=True) and len(ranking) > 3
    fallback = meta["quantization"]["fallback_layers"]
    if accuracy["int8_miou_all_layers"] < accuracy["fp32_miou"]:
        assert fallback and accuracy["fallback_steps"]
    assert accuracy["miou_drop"] <= 0.0 or len(fallback) == len(ranking)
    # the fallback layers really are float in the written model: no DequantizeLinear feeds their weights
    model = onnx.load(str(out))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in fallback:
            assert producers.get(node.input[1]) != "DequantizeLinear"


def test_budget_options_need_data(tiny_onnx, tmp_path):
    from edgeseg.errors import ConfigError
    from edgeseg.quant.api import calibrate

    with pytest.raises(ConfigError, match="need labelled --data"):
        calibrate(str(tiny_onnx), str(tmp_path), max_miou_drop=0.3)


def test_bias_correction_cancels_the_mean_shift_of_int8_weights():
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.quant.bias_correction import correct_biases, int8_per_channel

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph)
    mean = np.array([2.0, -1.0, 0.5])
    assert correct_biases(model, {"x": mean}) == ["conv"]
    new_bias = numpy_helper.to_array(model.graph.initializer[1])
    # for an input equal to its mean everywhere (away from the padded border), the INT8 conv with the new
    # bias gives what the float conv gave with the old one
    float_out = (weights * mean[None, :, None, None]).sum(axis=(1, 2, 3)) + bias
    int8_out = (int8_per_channel(weights) * mean[None, :, None, None]).sum(axis=(1, 2, 3)) + new_bias
    assert np.allclose(float_out, int8_out, atol=1e-5)
    assert not np.allclose(new_bias, bias)
