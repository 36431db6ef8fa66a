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


def test_entropy_does_not_clip_a_gate_with_no_mass_near_zero():
    # a sigmoid gate living in [0.24, 0.93]: clipping it at its lowest value gives KL = 0
    h = StreamingHistogram()
    h.update(np.random.default_rng(2).uniform(0.24, 0.93, 50_000))
    assert h.amax("entropy") > 0.8


def test_entropy_of_a_narrow_histogram_keeps_everything():
    counts = np.zeros(2048, dtype=np.int64)
    counts[:100] = 10
    assert entropy_amax(counts, 1.0) == 100.0
    # the squared error of clipping uniform mass outweighs rounding it: the search keeps (almost) everything
    assert mse_amax(counts, 1.0) == pytest.approx(99.2, abs=0.1)  # measured 99.21875


def test_calibration_cache_format_round_trip():
    text = format_cache({"input": 2.54, "conv_out": 12.7, "input:0": 0.5, "dead": 0.0}, "entropy")
    lines = text.splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"  # JetPack 5's TensorRT 8.5.2 by default
    name, hex_scale = lines[1].split(": ")
    assert name == "input" and struct.unpack(">f", bytes.fromhex(hex_scale))[0] == pytest.approx(0.02)
    parsed = parse_cache(text)
    # every tensor comes back, a tf2onnx-style name with ':' whole, and an all-zero tensor gets a tiny scale, not 0
    assert set(parsed) == {"input", "conv_out", "input:0", "dead"}
    assert parsed["conv_out"] == pytest.approx(0.1) and parsed["input:0"] == pytest.approx(0.5 / 127)
    assert 0 < parsed["dead"] < 1e-12
    assert format_cache({"x": 1.0}, "minmax", "10.3.0").startswith("TRT-100300-MinMaxCalibration\n")


@pytest.mark.parametrize("version,code", [("8.5.2", 8502), ("8.6.1", 8601), ("10.3.0", 100300),
                                          ("10.13.2", 101302), ("11.4.0.106", 110400), ("10.3", 100300),
                                          ("11", 110000)])
def test_cache_header_is_nv_tensorrt_version(version, code):
    from edgeseg.quant.trt_cache import for_tensorrt, tensorrt_version_code

    # NvInferVersion.h: major*1000 + minor*100 + patch on 8.x, major*10000 + minor*100 + patch from 10 on
    assert tensorrt_version_code(version) == code
    text = format_cache({"x": 1.0}, "minmax", "8.5.2")
    moved = for_tensorrt(text, version)
    # headed for the calibrator that reads it (trtexec's and Polygraphy's IInt8EntropyCalibrator2), scales as they are
    assert moved.splitlines()[0] == f"TRT-{code}-EntropyCalibration2" and moved.splitlines()[1:] == text.splitlines()[1:]


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
    assert "input" in ranges["tensors"] and ranges["method"] == "auto" and ranges["bias_correction"] is True
    # auto compared every candidate and kept the one whose argmax agrees most with FP32
    from edgeseg.quant.api import AUTO_CANDIDATES

    agreement = ranges["argmax_agreement_percent"]
    assert set(agreement) == set(AUTO_CANDIDATES) and all(0 <= a <= 100 for a in agreement.values())
    assert ranges["selected_method"] == max(agreement, key=agreement.get)
    assert cache[0].endswith({"minmax": "MinMaxCalibration"}.get(ranges["selected_method"], "EntropyCalibration2"))
    assert ranges["bias_corrected_layers"] > 0


def _conv_outputs_feeding_activations(path):
    """How many Conv outputs go through Q/DQ before their activation (Relu, HardSwish, ...)."""
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    count = 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and getattr(producers.get(node.input[0]), "op_type", "") == "Conv":
            after = [c.op_type for dq in consumers.get(node.output[0], []) for c in consumers.get(dq.output[0], [])]
            count += any(op in ("Relu", "HardSwish", "HardSigmoid", "Sigmoid", "Clip") for op in after)
    return count


def test_qdq_goes_on_inputs_only_unless_outputs_are_asked_for(tiny_int8, tiny_onnx, tiny_data, tmp_path):
    # TensorRT's placement: rounding a pre-activation conv output and then its activation again cost
    # 2.4 mIoU on the pruned CamVid student
    from edgeseg.quant.api import calibrate

    assert _conv_outputs_feeding_activations(tiny_int8) == 0
    out = tmp_path / "outputs.int8.onnx"
    meta = calibrate(str(tiny_onnx), str(tiny_data), str(out), num=4, quantize_outputs=True, method="mse")
    assert meta["quantization"]["quantize_outputs"] is True
    assert _conv_outputs_feeding_activations(out) > 0


def test_asymmetric_output_qdq_folds_relus_into_the_convs(tiny_onnx, tiny_data, tmp_path):
    # ONNX Runtime's CPU layout: with asymmetric activations a Relu after a conv is dropped and the conv's
    # output Q takes its [0, max] range, so DQ -> Conv -> Q becomes one QLinearConv with one rounding
    import onnx

    from edgeseg.quant.api import calibrate

    out = tmp_path / "asym.int8.onnx"
    meta = calibrate(str(tiny_onnx), str(tiny_data), str(out), num=4, quantize_outputs=True, symmetric=False,
                     method="minmax")
    assert meta["quantization"]["symmetric"] is False

    def relus(path):
        return sum(node.op_type == "Relu" for node in onnx.load(str(path)).graph.node)

    assert relus(tiny_onnx) > 0
    assert relus(out) == 0  # every Relu of the student follows a quantised conv
    symmetric = tmp_path / "sym.int8.onnx"
    calibrate(str(tiny_onnx), str(tiny_data), str(symmetric), num=4, quantize_outputs=True, method="minmax")
    assert relus(symmetric) == relus(tiny_onnx)  # int8 with zero point 0 cannot clip at 0: TensorRT's layout keeps them


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


def test_accuracy_budget_picks_layers_on_one_half_and_reports_on_the_other(tiny_teacher, tiny_data, tmp_path,
                                                                            monkeypatch, capsys):
    import tempfile

    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar

    fp32 = tmp_path / "unet.onnx"  # a U-Net has few layers, which keeps the many re-quantisations quick
    export(str(tiny_teacher), str(fp32), data=str(tiny_data))
    scratch = tmp_path / "scratch"  # where every temporary folder of the run goes
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "b.int8.onnx"
    # percentile 92 clips enough for INT8 to lose on the pick images (5.41 -> 5.36; measured with float conv
    # biases, which calibrate writes since TensorRT's parser refuses INT32 ones)
    meta = calibrate(str(fp32), str(tiny_data), str(out), num=4, data=str(tiny_data), max_miou_drop=0.0,
                     report=True, method="percentile", percentile=92.0, bias_correction=False)
    assert "Per-layer INT8 sensitivity" in capsys.readouterr().out
    assert list(scratch.iterdir()) == []  # the candidate models of the sensitivity search are gone
    accuracy, fallback = meta["accuracy"], meta["quantization"]["fallback_layers"]

    # the val split's 4 images: picking on 1-2, the reported figures on 3-4 (recomputed here independently)
    spec, _ = spec_from_sidecar(read_sidecar(fp32))
    pick, held_out = load_eval_set(str(tiny_data), spec).halves()
    assert accuracy["split"]["pick"]["images"] == "1-2" and accuracy["split"]["report"]["images"] == "3-4"
    assert accuracy["fp32_miou"] == onnx_miou(fp32, held_out) != onnx_miou(fp32, pick)
    assert accuracy["int8_miou"] == onnx_miou(out, held_out)
    assert accuracy["miou_drop"] == pytest.approx(accuracy["fp32_miou"] - accuracy["int8_miou"], abs=1e-4)
    assert accuracy["pick_miou"]["fp32"] == onnx_miou(fp32, pick)
    assert accuracy["pick_miou"]["int8"] == onnx_miou(out, pick) == accuracy["fallback_steps"][-1]["miou"]
    assert {row["images"] for row in accuracy["sensitivity"]} == {2}
    ranking = [row["miou_with_layer_in_float"] for row in accuracy["sensitivity"]]
    assert ranking == sorted(ranking, reverse=True) and len(ranking) > 3

    # measured: one layer in float brings the pick images within the budget (drop -0.09) ...
    assert len(fallback) == 1 and fallback == [accuracy["sensitivity"][0]["layer"]]
    assert accuracy["pick_miou"]["int8"] >= accuracy["pick_miou"]["fp32"]
    # ... and the report images, which picking never saw, say it does not hold there (drop 2.34 +- 0.5)
    assert accuracy["miou_drop"] == pytest.approx(2.34, abs=0.5) and accuracy["within_budget"] is False
    # the fallback layers really are float in the written model: no DequantizeLinear feeds their weights
    model = onnx.load(str(out))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in fallback:
            assert producers.get(node.input[1]) != "DequantizeLinear"


def test_sensitivity_models_are_written_only_inside_their_with_block(tiny_onnx):
    from edgeseg.quant.sensitivity import EvalSet, Quantizer

    quantizer = Quantizer(tiny_onnx, {}, True, EvalSet([], [], None))
    with quantizer:
        folder = quantizer.folder
        assert folder.is_dir()
    assert not folder.exists()
    with pytest.raises(RuntimeError, match="with"):
        quantizer.folder


def test_budget_options_need_data(tiny_onnx, tmp_path):
    from edgeseg.errors import ConfigError
    from edgeseg.quant.api import calibrate

    with pytest.raises(ConfigError, match="need labelled --data"):
        calibrate(str(tiny_onnx), str(tmp_path), max_miou_drop=0.3)


def _two_conv_model(weights, bias):
    """x -> conv (INT8, corrected) -> 1x1 identity conv (the logits: kept in float) -> y."""
    from onnx import TensorProto, helper, numpy_helper

    channels = weights.shape[0]
    identity = np.eye(channels, dtype=np.float32)[:, :, None, None]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["h"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["h", "eye"], ["y"], name="logits")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights.shape[1], 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b"),
         numpy_helper.from_array(identity, "eye")])
    # IR 8 (what opset 17 came with): the default of a new onnx is newer than older ONNX Runtimes read
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_bias_correction_cancels_the_mean_shift_of_int8(tmp_path):
    # ReLU-like inputs whose tail the range clips: INT8 lowers the conv's mean output; the corrected
    # Q/DQ model (run by ONNX Runtime) has the FP32 model's mean output again
    import onnxruntime as ort

    from edgeseg.quant.conv_error import measurable_convs, measure_shifts
    from edgeseg.quant.qdq import write_qdq

    rng = np.random.default_rng(0)
    weights = np.abs(rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    model = _two_conv_model(weights, rng.standard_normal(4).astype(np.float32))
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(model, str(fp32))
    images = [np.maximum(rng.standard_normal((1, 3, 8, 8)), 0).astype(np.float32) * 3 for _ in range(16)]
    ranges = {"x": (-2.0, 2.0), "h": (-100.0, 100.0)}
    convs = measurable_convs(model, ranges, skip=["logits"])
    assert [c.name for c in convs] == ["conv"]
    shifts = measure_shifts(model, convs, {"x": {"clip": ranges["x"]}}, ({"x": x} for x in images), symmetric=True)
    shift = shifts["conv"]["clip"]
    assert (shift < -0.1).all()  # clipping at 2 really lowers the mean

    def mean_output(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.mean([session.run(None, {"x": x})[0].mean(axis=(0, 2, 3)) for x in images], axis=0)

    write_qdq(fp32, tmp_path / "plain.onnx", ranges)
    write_qdq(fp32, tmp_path / "corrected.onnx", ranges, bias_shifts={"conv": shift})
    exact = mean_output(fp32)
    assert np.allclose(mean_output(tmp_path / "plain.onnx") - exact, shift, atol=0.02)
    assert np.allclose(mean_output(tmp_path / "corrected.onnx"), exact, atol=0.02)
    # a layer kept in float keeps its own bias
    write_qdq(fp32, tmp_path / "float.onnx", ranges, bias_shifts={"conv": shift}, nodes_to_exclude=["conv"])
    assert np.allclose(mean_output(tmp_path / "float.onnx"), exact, atol=1e-4)


def test_agreement_is_the_share_of_pixels_whose_class_matches_fp32(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.quant.selection import PredictionAgreement

    def model(path, scale):  # logits = x * scale per channel: the argmax follows the scales' signs
        graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                                  [numpy_helper.from_array(np.array(scale, np.float32).reshape(1, 2, 1, 1), "s")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
        return path

    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 0] = 1.0  # class 0 wins everywhere in the reference
    x[0, 1, :1] = 2.0  # ... except in the first row
    judge = PredictionAgreement(model(tmp_path / "ref.onnx", [1, 1]), [x])
    assert judge.percent(tmp_path / "ref.onnx") == 100.0
    assert judge.percent(model(tmp_path / "flip.onnx", [1, -1])) == 75.0  # the first row now says class 0


def test_qdq_quantizer_gets_every_argument_by_name(tiny_int8, tiny_onnx, tmp_path, monkeypatch):
    """ONNX Runtime's QDQQuantizer is internal and its positional order changed in 1.18: names survive that."""
    from onnxruntime.quantization import qdq_quantizer

    from edgeseg.quant.qdq import write_qdq

    real = qdq_quantizer.QDQQuantizer
    passed = {}

    class KeywordsOnly(real):
        def __init__(self, *args, **kwargs):
            assert not args, f"positional arguments {args!r}"
            passed.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(qdq_quantizer, "QDQQuantizer", KeywordsOnly)
    ranges = json.loads(tiny_int8.with_name("student.ranges.json").read_text())["tensors"]
    write_qdq(tiny_onnx, tmp_path / "k.onnx", {n: (t["low"], t["high"]) for n, t in ranges.items()})
    assert passed["per_channel"] is True and passed["extra_options"]["WeightSymmetric"] is True
    assert (tmp_path / "k.onnx").stat().st_size > 0


def _residual_model(rng):
    """x -> conv a -> r; r -> conv b -> y; add(y, r) -> s; s -> conv c -> logits: one residual block."""
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
               for name, shape in (("wa", (4, 3, 3, 3)), ("wb", (4, 4, 3, 3)), ("wc", (2, 4, 1, 1)))]
    biases = [numpy_helper.from_array(rng.standard_normal(4 if n != "bc" else 2).astype(np.float32), n)
              for n in ("ba", "bb", "bc")]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["r"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["r", "wb", "bb"], ["y"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["y", "r"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["t"], name="relu"),
             helper.make_node("Conv", ["t", "wc", "bc"], ["logits"], name="conv_c")]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 8])],
                              weights + biases)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_residual_add_reads_its_conv_branch_in_float_and_its_skip_in_int8(tmp_path):
    """TensorRT fuses the Add into conv_b only without a Q/DQ pair between them (ModelOpt places it so)."""
    import onnxruntime as ort

    from edgeseg.engine.trt_rules import ALL_TARGETS, check_for_tensorrt
    from edgeseg.quant.qdq import write_qdq

    rng = np.random.default_rng(0)
    onnx.save(_residual_model(rng), str(tmp_path / "fp32.onnx"))
    ranges = {name: (-4.0, 4.0) for name in ("x", "r", "y", "s", "t")}
    write_qdq(tmp_path / "fp32.onnx", tmp_path / "q.onnx", ranges, nodes_to_exclude=["conv_c"])
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producer = {out: node for node in graph.node for out in node.output}
    add = next(n for n in graph.node if n.op_type == "Add")
    assert add.input[0] == "y" and producer["y"].name == "conv_b"  # the branch: straight from the conv, in float
    skip = producer[add.input[1]]
    assert skip.op_type == "DequantizeLinear" and producer[skip.input[0]].input[0] == "r"  # the skip: INT8
    assert not [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "y"]  # no dangling Q/DQ
    # conv_b still computes in INT8 and the graph runs, close to FP32
    assert producer[next(n for n in graph.node if n.name == "conv_b").input[1]].op_type == "DequantizeLinear"
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    run = {p: ort.InferenceSession(str(tmp_path / p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for p in ("fp32.onnx", "q.onnx")}
    assert np.abs(run["q.onnx"] - run["fp32.onnx"]).mean() < 0.05
    assert all(check_for_tensorrt(str(tmp_path / "q.onnx"), v) == [] for v in ALL_TARGETS)
    # ONNX Runtime's own layout (Q/DQ on outputs too) keeps the pair: its QLinearAdd needs both inputs in INT8
    write_qdq(tmp_path / "fp32.onnx", tmp_path / "ort.onnx", ranges, nodes_to_exclude=["conv_c"], quantize_outputs=True)
    graph = onnx.load(str(tmp_path / "ort.onnx")).graph
    assert next(n for n in graph.node if n.op_type == "Add").input[0] != "y"
