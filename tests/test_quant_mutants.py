"""edgeseg/quant/ checked against references computed here, on models built in a few lines (no session fixtures).

Each test fails when the feature it names breaks: thresholds against a brute-force
search written out below, histogram counts worked out by hand, Q/DQ scales and zero
points against the ranges given, biases against the shifts, tensors against ONNX Runtime
runs of the FP32 model. `make mutate MODULE=edgeseg/quant/<file>.py` with this file
runs in seconds a mutant (benchmarks/results/mutation/quant.md).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch  # noqa: F401  (conv_error's measurements run in torch: imported once at collection, not in a test)
from onnx import TensorProto, helper, numpy_helper

from edgeseg.quant import histogram
from edgeseg.quant.histogram import StreamingHistogram, entropy_amax, mse_amax, percentile_amax


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Each test runs in its own folder: a file written at a wrong relative path lands there, not in the next test's."""
    monkeypatch.chdir(tmp_path)

# ---------------------------------------------------------------- histogram.py: brute-force references

def _kl_reference(counts, i, levels):
    """KL(P || Q) of threshold bin i, written out bin by bin (Migacz, GTC 2017)."""
    p = [float(c) for c in counts[:i]]
    p[i - 1] += float(sum(counts[i:]))
    q = [0.0] * i
    edges = [int(math.floor(k * i / levels)) for k in range(levels + 1)]
    for k in range(levels):
        start, stop = edges[k], edges[k + 1]
        chunk = [float(c) for c in counts[start:stop]]
        nonzero, total = sum(1 for c in chunk if c > 0), sum(chunk)
        for j in range(start, stop):
            q[j] = total / nonzero if counts[j] > 0 else 0.0
    if sum(q) == 0:
        return math.inf
    p_total, q_total = sum(p), sum(q)
    kl = 0.0
    for pj, qj in zip(p, q):
        if pj > 0:
            kl += pj / p_total * math.log((pj / p_total) / (qj / q_total if qj > 0 else 1e-10))
    return kl


def _entropy_reference(counts, bin_width, levels=128):
    """Candidates from (first non-zero bin + levels) to the last non-zero bin; the first smallest KL wins.

    Over 256 candidates, every step-th one is tried, then each one within a step of the best.
    """
    counts = [float(c) for c in counts]
    counts[0] = counts[1]
    nonzero = [j for j, c in enumerate(counts) if c > 0]
    last, first = nonzero[-1] + 1, nonzero[0] + levels
    if last <= first:
        return last * bin_width

    def best_of(candidates):
        kls = [(_kl_reference(counts, i, levels), i) for i in candidates]
        return min(kls, key=lambda item: item[0])[1]

    step = max(1, (last - first) // 256)
    best = best_of(range(first, last + 1, step))
    if step > 1:
        best = best_of(range(max(first, best - step), min(last, best + step) + 1))
    return (best + 0.5) * bin_width


def _mse_reference(counts, bin_width, levels=128, candidates=256):
    nonzero = [j for j, c in enumerate(counts) if c > 0]
    top = (nonzero[-1] + 1) * bin_width
    best_err, best_t = math.inf, None
    for k in range(1, candidates + 1):
        t = top * k / candidates
        step = t / (levels - 1)
        err = 0.0
        for j, c in enumerate(counts):
            center = (j + 0.5) * bin_width
            q = min(max(round(center / step), 0), levels - 1) * step
            err += c * (center - q) ** 2
        if err < best_err:
            best_err, best_t = err, t
    return best_t


def _percentile_reference(counts, bin_width, percentile):
    total = sum(counts)
    running = 0
    for j, c in enumerate(counts):
        running += c
        if running >= total * percentile / 100.0:
            return (j + 1) * bin_width
    return len(counts) * bin_width


def test_a_new_histogram_is_empty_with_2048_bins():
    h = StreamingHistogram()
    assert histogram.NUM_BINS == 2048 and histogram.INT8_LEVELS == 128
    assert h.num_bins == 2048 and h.counts.shape == (2048,) and h.counts.dtype == np.int64 and h.counts.sum() == 0
    assert h.range == 0.0 and h.min == math.inf and h.max == -math.inf
    assert h.amax("minmax") == 0.0 and h.amax("entropy") == 0.0  # nothing seen: no range
    h.update(np.zeros((0, 3), np.float32))  # an empty batch changes nothing
    assert h.min == math.inf and h.max == -math.inf and h.counts.sum() == 0 and h.range == 0.0
    h.update(np.array([0.1, -0.3]))  # float64 in: the histogram works in float32, as the activations are
    assert h.max == float(np.float32(0.1)) != 0.1 and h.min == float(np.float32(-0.3))


def test_histogram_counts_by_hand_through_two_growths():
    h = StreamingHistogram(num_bins=8)
    h.update([[1.0, -0.3]])  # range 1: 0.3 -> bin 2, 1.0 -> bin 8 clipped to the last, 7
    assert h.range == 1.0 and h.bin_width == 0.125
    assert h.counts.tolist() == [0, 0, 1, 0, 0, 0, 0, 1] and h.counts.dtype == np.int64
    h.update(np.array([-3.0]))  # log2(3) -> 2 doublings: range 4, bins merge by 4, 3.0 -> bin 6
    assert h.range == 4.0 and h.counts.tolist() == [1, 1, 0, 0, 0, 0, 1, 0]
    h.update(np.array([2.0]))  # peak 2 is still inside: no growth, bin 4
    assert h.range == 4.0 and h.counts.tolist() == [1, 1, 0, 0, 1, 0, 1, 0]
    h.update(np.array([8.0, 0.0]))  # exactly twice the range: one doubling, 8 -> last bin, 0 -> bin 0
    assert h.range == 8.0 and h.counts.tolist() == [2 + 1, 0, 1, 1, 0, 0, 0, 1]
    h.update(np.array([100.0]))  # 12.5x: 4 doublings, factor 16 >= 8 bins: every earlier count lands in bin 0
    assert h.range == 128.0 and h.counts.tolist() == [6, 0, 0, 0, 0, 0, 1, 0]
    assert h.counts.dtype == np.int64  # counts stay exact integers through every merge
    assert h.min == -3.0 and h.max == 100.0 and h.amax("minmax") == 100.0
    h.update(np.array([127.0]))  # a peak below the range: no growth
    assert h.range == 128.0 and h.counts.tolist() == [6, 0, 0, 0, 0, 0, 1, 1]
    h.update(np.array([300.0]))  # 2.3x: 2 doublings (factor 4 < 8 bins): 4 bins merge into each
    assert h.range == 512.0 and h.counts.tolist() == [6, 2, 0, 0, 1, 0, 0, 0] and h.counts.dtype == np.int64


def test_histogram_of_zeros_first_then_values():
    h = StreamingHistogram(num_bins=4)
    h.update(np.zeros(5))  # no range yet: the zeros are counted in bin 0
    h.update(np.zeros(3))
    assert h.range == 0.0 and h.counts.tolist() == [8, 0, 0, 0] and h.min == 0.0 and h.max == 0.0
    h.update(np.array([-2.0, 1.0]))  # the first non-zero peak sets the range
    assert h.range == 2.0 and h.counts.tolist() == [8, 0, 1, 1]
    assert h.amax("minmax") == 2.0 and h.min == -2.0 and h.max == 1.0


def test_minmax_is_the_larger_magnitude_of_min_and_max():
    h = StreamingHistogram(num_bins=16)
    h.update(np.array([-1.5, 5.25, 0.5]))
    assert h.amax("minmax") == 5.25
    h.update(np.array([-7.0]))
    assert h.amax("minmax") == 7.0


def test_amax_dispatches_to_each_method_with_the_histograms_bins():
    rng = np.random.default_rng(4)
    h = StreamingHistogram(num_bins=256)
    h.update(rng.laplace(size=20_000))
    width = h.range / 256
    assert h.bin_width == pytest.approx(width)
    assert h.amax("percentile") == pytest.approx(_percentile_reference(h.counts, width, 99.99))
    assert h.amax("percentile", 90.0) == pytest.approx(_percentile_reference(h.counts, width, 90.0))
    assert h.amax("mse") == pytest.approx(_mse_reference(h.counts, width))
    assert h.amax("entropy") == pytest.approx(_entropy_reference(h.counts, width))
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        h.amax("kl")


@pytest.mark.parametrize("percentile", [50.0, 90.0, 99.0, 100.0])
def test_percentile_is_the_smallest_threshold_holding_that_share(percentile):
    counts = np.array([0, 3, 1, 0, 4, 2, 0, 0], np.int64)
    assert percentile_amax(counts, 0.5, percentile) == pytest.approx(_percentile_reference(counts, 0.5, percentile))
    assert percentile_amax(counts, 0.5, 101.0) == 4.0  # past every count: the whole range, not beyond
    top = np.array([1, 0, 0, 2], np.int64)  # the last bin holds the top of the data
    assert percentile_amax(top, 0.5, percentile) == pytest.approx(_percentile_reference(top, 0.5, percentile))


@pytest.mark.parametrize("seed, shape", [(0, "laplace"), (1, "relu"), (2, "bimodal")])
def test_entropy_threshold_is_the_brute_force_kl_minimum(seed, shape):
    """Every candidate searched (fewer than 256 of them): the exact brute-force minimum."""
    rng = np.random.default_rng(seed)
    if shape == "laplace":
        values = np.abs(rng.laplace(size=30_000))
    elif shape == "relu":
        values = np.maximum(rng.standard_normal(30_000), 0)
    else:
        values = np.concatenate([rng.normal(1.0, 0.2, 20_000), rng.normal(4.0, 0.3, 2_000)])
    counts = np.histogram(np.abs(values), bins=360, range=(0, float(np.abs(values).max())))[0].astype(np.int64)
    got = entropy_amax(counts, 0.25)
    assert got == pytest.approx(_entropy_reference(counts, 0.25))
    assert got < 360 * 0.25


def test_entropy_coarse_then_fine_search_finds_the_brute_force_minimum():
    """Over 256 candidates: every 2nd one, then each one within 2 bins of the best."""
    rng = np.random.default_rng(3)
    values = np.abs(rng.standard_normal(100_000))
    counts = np.histogram(values, bins=700, range=(0, float(values.max())))[0].astype(np.int64)
    last = int(np.nonzero(counts)[0][-1]) + 1
    assert (last - 128) // 256 == 2  # the coarse pass really steps
    got = entropy_amax(counts, 0.01)
    assert got == pytest.approx(_entropy_reference(counts, 0.01))
    assert entropy_amax(counts, 0.01) != pytest.approx(entropy_amax(counts[:300], 0.01))


def test_entropy_search_boundaries():
    """The fine pass at a step of 2, the step at 512-513 candidates, the last bin as a candidate."""
    rng = np.random.default_rng(9)
    values = np.abs(rng.standard_normal(20_000))
    counts = np.histogram(values, bins=700, range=(0, values.max()))[0].astype(np.int64)
    assert entropy_amax(counts, 1.0) == pytest.approx(_entropy_reference(counts, 1.0)) == 635.5  # coarse alone: 634.5
    values = np.abs(np.random.default_rng(0).standard_normal(20_000))
    counts = np.histogram(values, bins=641, range=(0, values.max()))[0].astype(np.int64)
    assert entropy_amax(counts, 1.0) == 558.5  # 513 candidates: a step of 2 (one step would find 641.5)
    uniform = np.zeros(400, np.int64)
    uniform[1:] = 10  # clipping uniform data always loses: the best threshold keeps the last bin
    assert entropy_amax(uniform, 1.0) == pytest.approx(_entropy_reference(uniform, 1.0)) == 400.5


def test_entropy_first_bin_takes_the_seconds_count():
    """A flood of exact zeros (after ReLU) must not pull the threshold down: bin 0 counts as bin 1."""
    rng = np.random.default_rng(5)
    counts = np.histogram(np.abs(rng.standard_normal(50_000)), bins=300, range=(0, 5.0))[0].astype(np.int64)
    flooded = counts.copy()
    flooded[0] = 10_000_000
    assert entropy_amax(flooded, 1.0) == entropy_amax(counts, 1.0) == pytest.approx(_entropy_reference(counts, 1.0))
    gap = counts.copy()
    gap[1] = 0  # bin 1 empty: bin 0 is then empty too, and the search starts 128 bins above bin 2
    gap[0] = 10_000_000
    assert entropy_amax(gap, 1.0) == pytest.approx(_entropy_reference(gap, 1.0))


def test_entropy_of_histograms_too_short_to_search():
    counts = np.zeros(300, np.int64)
    counts[10:60] = 5  # 50 bins of data: fewer than 128 levels above the first non-zero bin
    assert entropy_amax(counts, 0.5) == 30.0  # everything kept: the last non-zero bin's edge
    exact = np.zeros(300, np.int64)
    exact[10:138] = 5  # exactly 128 bins of data: still nothing to search
    assert entropy_amax(exact, 1.0) == 138.0
    assert entropy_amax(np.zeros(300, np.int64), 0.5) == 0.5  # nothing at all: one bin
    assert entropy_amax(np.array([7], np.int64), 2.0) == 2.0  # one bin of data


def test_entropy_levels_decide_the_search():
    counts = np.histogram(np.abs(np.random.default_rng(6).laplace(size=30_000)), bins=200)[0].astype(np.int64)
    assert entropy_amax(counts, 1.0, levels=16) == pytest.approx(_entropy_reference(counts, 1.0, levels=16))
    assert entropy_amax(counts, 1.0, levels=16) != entropy_amax(counts, 1.0)


def test_kl_of_one_candidate_by_hand():
    counts = np.array([4.0, 2.0, 2.0, 0.0, 1.0, 1.0])
    for i in (2, 3, 4, 5, 6):
        assert histogram._kl_of_candidate(counts, i, 2) == pytest.approx(_kl_reference(counts, i, 2), abs=1e-12)
    assert histogram._kl_of_candidate(np.array([0.0, 0.0, 5.0]), 2, 2) == math.inf  # Q empty


def test_best_candidate_takes_the_first_smallest_and_falls_back_to_the_last():
    counts = np.array([4.0, 2.0, 2.0, 0.0, 1.0, 1.0])
    kls = {i: _kl_reference(counts, i, 2) for i in range(2, 7)}
    best = min(kls, key=kls.get)
    assert histogram._best_candidate(counts, range(2, 7), 2) == (pytest.approx(kls[best]), best)
    # no finite KL at all: the last candidate
    assert histogram._best_candidate(np.array([0.0, 0.0, 0.0, 5.0]), range(1, 4), 2) == (math.inf, 3)
    # equal KLs (0 for 4, 5 and 6 bins of flat data): the first, the lowest threshold
    assert histogram._best_candidate(np.array([2.0, 2.0, 2.0, 2.0, 0.0, 0.0]), range(4, 7), 2) == (0.0, 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_mse_threshold_is_the_brute_force_minimum(seed):
    rng = np.random.default_rng(seed)
    counts = np.histogram(np.abs(rng.laplace(size=5_000)), bins=64)[0].astype(np.int64)
    counts[-8:] = 0  # empty top bins: the search stops at the last non-zero one
    assert mse_amax(counts, 0.1) == pytest.approx(_mse_reference(counts, 0.1))
    assert mse_amax(counts, 0.1, levels=8, candidates=32) == pytest.approx(
        _mse_reference(counts, 0.1, levels=8, candidates=32))
    assert mse_amax(np.zeros(8, np.int64), 0.5) == 0.5 / 256  # nothing seen: every error is 0, the first candidate


# ---------------------------------------------------------------- tiny ONNX models built here

def _model(nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _conv_relu_pool_model(rng, bias=True):
    """x -> Conv c1 -> h -> Relu -> r -> MaxPool -> m -> Conv c2 -> logits (c2 is the logits conv)."""
    init = {"w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "w2": rng.standard_normal((2, 4, 1, 1)).astype(np.float32),
            "b2": rng.standard_normal(2).astype(np.float32)}
    if bias:
        init["b1"] = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"] + (["b1"] if bias else []), ["h"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["m", "w2", "b2"], ["logits"], name="c2")]
    return _model(nodes, [("x", [1, 3, 8, 8])], [("logits", [1, 2, 4, 4])], init)


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _qdq_layout(path):
    """{activation tensor: (scale, zero point, zero-point dtype)} of each QuantizeLinear, {weight: (int8, scales, axis)},
    the set of tensors each node reads through a DequantizeLinear, and the graph."""
    model = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    acts, weights = {}, {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            zp = init[node.input[2]]
            acts[node.input[0]] = (float(init[node.input[1]]), int(zp), zp.dtype)
        if node.op_type == "DequantizeLinear" and node.input[0] in init:
            axis = {a.name: a.i for a in node.attribute}.get("axis")
            weights[node.input[0].replace("_quantized", "")] = (init[node.input[0]], init[node.input[1]], axis)

    def source(tensor):  # the float tensor behind a DQ <- Q pair, or None
        dq = producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0].replace("_quantized", "")

    through_dq = {node.name: [source(t) for t in node.input] for node in model.graph.node}
    return acts, weights, through_dq, model


def _int8_weights(w):
    scale = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127.0
    return np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8), scale


def _check_tensorrt_rules(path):
    from edgeseg.engine.trt_rules import ALL_TARGETS, check_for_tensorrt

    assert all(check_for_tensorrt(str(path), v) == [] for v in ALL_TARGETS)


# ---------------------------------------------------------------- qdq.py

def test_logits_nodes_walk_back_from_the_output_to_the_last_convolutions():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="early"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w"], ["b"], name="head"),
             helper.make_node("ConvTranspose", ["r", "w"], ["t"], name="up"),
             helper.make_node("Add", ["b", "t"], ["s"], name="sum"),
             helper.make_node("Sigmoid", ["s"], ["y"], name="act")]
    model = _model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 2, 4, 4])], {"w": w})
    # output back through Sigmoid and Add to both convolutions feeding them, not beyond; each once
    assert logits_nodes_sorted(model) == ["act", "head", "sum", "up"]
    from edgeseg.quant.qdq import logits_nodes

    assert logits_nodes(model)[:2] == ["act", "sum"]
    # a graph output nobody computes (an input passed through) adds nothing
    model.graph.output.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]))
    assert logits_nodes_sorted(model) == ["act", "head", "sum", "up"]
    # a Gemm or MatMul ends the walk as a convolution does
    for op in ("Gemm", "MatMul"):
        nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
                 helper.make_node(op, ["a", "w2"], ["b"], name="fc"), helper.make_node("Relu", ["b"], ["y"], name="last")]
        fc = _model(nodes, [("x", [2, 2])], [("y", [2, 2])], {"w2": np.eye(2, dtype=np.float32)})
        assert logits_nodes_sorted(fc) == ["fc", "last"]


def logits_nodes_sorted(model):
    from edgeseg.quant.qdq import logits_nodes

    found = logits_nodes(model)
    assert len(found) == len(set(found))
    return sorted(found)


def test_ensure_node_names_names_only_the_unnamed_by_op_and_index():
    from edgeseg.quant.qdq import ensure_node_names

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"], name="mine"),
             helper.make_node("Relu", ["b"], ["y"])]
    model = _model(nodes, [("x", [1])], [("y", [1])], {})
    ensure_node_names(model)
    assert [n.name for n in model.graph.node] == ["Relu_0", "mine", "Relu_2"]


def test_qdq_scales_are_the_ranges_over_127_and_the_weights_per_channel(tmp_path):
    from edgeseg.quant.qdq import write_qdq

    rng = np.random.default_rng(0)
    model = _conv_relu_pool_model(rng)
    fp32 = _save(model, tmp_path / "fp32.onnx")
    ranges = {"x": (-1.0, 3.0), "h": (-2.0, 6.0), "r": (0.0, 6.0), "m": (0.0, 5.0)}
    kept = write_qdq(fp32, tmp_path / "q.onnx", ranges)
    assert kept == ["c2"]  # the logits conv stays float
    acts, weights, through, q = _qdq_layout(tmp_path / "q.onnx")
    # inputs only: x (into c1) and r (into the pool); h is never rounded (Conv+Relu fuse), m feeds the float head
    assert set(acts) == {"x", "r"}
    for name, (scale, zp, dtype) in acts.items():
        low, high = ranges[name]
        assert scale == pytest.approx(max(abs(low), abs(high)) / 127, rel=1e-6) and zp == 0 and dtype == np.int8
    assert set(weights) == {"w1"}  # the head's weights stay float
    int8, scales, axis = weights["w1"]
    expected, expected_scales = _int8_weights(numpy_helper.to_array(model.graph.initializer[0]))
    assert axis == 0 and int8.dtype == np.int8
    np.testing.assert_allclose(scales, expected_scales, rtol=1e-6)
    np.testing.assert_array_equal(int8, expected)
    assert through["c1"] == ["x", "w1", None] and through["pool"] == ["r"] and through["c2"] == [None, None, None]
    # biases stay float initializers (TensorRT refuses INT32 into DequantizeLinear), unchanged
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert init["b1"].dtype == np.float32 and init["b2"].dtype == np.float32
    np.testing.assert_array_equal(init["b1"], numpy_helper.to_array(
        next(i for i in model.graph.initializer if i.name == "b1")))
    _check_tensorrt_rules(tmp_path / "q.onnx")


def test_asymmetric_ranges_give_uint8_zero_points(tmp_path):
    from edgeseg.quant.qdq import write_qdq

    fp32 = _save(_conv_relu_pool_model(np.random.default_rng(1)), tmp_path / "fp32.onnx")
    ranges = {"x": (-1.0, 3.0), "h": (-2.0, 6.0), "r": (0.0, 6.0), "m": (0.0, 5.0)}
    write_qdq(fp32, tmp_path / "q.onnx", ranges, symmetric=False)
    acts, weights, _, _ = _qdq_layout(tmp_path / "q.onnx")
    assert set(acts) == {"x", "r"}
    # [low, high] over 0..255: x: scale 4/255, zero point round(1 / (4/255)) = 64; r: 6/255, zero point 0
    assert acts["x"][0] == pytest.approx(4 / 255, rel=1e-6) and acts["x"][1:] == (64, np.uint8)
    assert acts["r"][0] == pytest.approx(6 / 255, rel=1e-6) and acts["r"][1:] == (0, np.uint8)
    assert weights["w1"][0].dtype == np.int8 and not weights["w1"][1].dtype == np.uint8  # weights stay symmetric int8


def test_output_qdq_rounds_each_conv_output_and_asymmetric_drops_the_relu(tmp_path):
    from edgeseg.quant.qdq import write_qdq

    fp32 = _save(_conv_relu_pool_model(np.random.default_rng(2)), tmp_path / "fp32.onnx")
    ranges = {"x": (-1.0, 3.0), "h": (-2.0, 6.0), "r": (0.0, 6.0), "m": (0.0, 5.0)}
    write_qdq(fp32, tmp_path / "sym.onnx", ranges, quantize_outputs=True)
    acts, _, through, q = _qdq_layout(tmp_path / "sym.onnx")
    assert {"x", "h", "r", "m"} <= set(acts) and acts["h"][0] == pytest.approx(6 / 127, rel=1e-6)
    assert [n.op_type for n in q.graph.node].count("Relu") == 1 and through["relu"] == ["h"]
    write_qdq(fp32, tmp_path / "asym.onnx", ranges, symmetric=False, quantize_outputs=True)
    acts, _, through, q = _qdq_layout(tmp_path / "asym.onnx")
    assert "Relu" not in [n.op_type for n in q.graph.node]  # the conv's output Q over [0, 6] is the ReLU
    assert acts["r"][1:] == (0, np.uint8) and acts["r"][0] == pytest.approx(6 / 255, rel=1e-6)
    assert through["pool"] == ["r"]
    # symmetric with outputs keeps the Relu too: only an asymmetric [0, max] range can stand for it
    write_qdq(fp32, tmp_path / "sym_in.onnx", ranges)
    assert "Relu" in [n.op_type for n in onnx.load(str(tmp_path / "sym_in.onnx")).graph.node]


def _every_op_model(rng):
    """One node of each quantised op type, each reading activations that have ranges; a float head."""
    f = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)  # noqa: E731
    init = {"wc": f(4, 3, 1, 1), "wt": f(4, 4, 1, 1), "wm": f(8, 8), "wg": f(8, 8), "gb": f(8),
            "shape": np.array([1, 8, 1, 1], np.int64), "wl": f(2, 8, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "wc"], ["a"], name="conv"),
             helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
             helper.make_node("ConvTranspose", ["ra", "wt"], ["b"], name="convt"),
             helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
             helper.make_node("Add", ["ra", "rb"], ["s"], name="add"),
             helper.make_node("Mul", ["s", "ra"], ["mu"], name="mul"),
             helper.make_node("Concat", ["mu", "ra"], ["cc"], name="concat", axis=1),
             helper.make_node("MaxPool", ["cc"], ["mp"], name="maxpool", kernel_shape=[2, 2]),
             helper.make_node("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[2, 2]),
             helper.make_node("GlobalAveragePool", ["ap"], ["gp"], name="gap"),
             helper.make_node("Flatten", ["gp"], ["fl"], name="flatten"),
             helper.make_node("MatMul", ["fl", "wm"], ["mm"], name="matmul"),
             helper.make_node("Sigmoid", ["mm"], ["sg"], name="sigmoid"),
             helper.make_node("Gemm", ["sg", "wg", "gb"], ["ge"], name="gemm"),
             helper.make_node("Relu", ["ge"], ["rg"], name="relu_g"),
             helper.make_node("Reshape", ["rg", "shape"], ["r4"], name="reshape"),
             helper.make_node("Conv", ["r4", "wl"], ["logits"], name="head")]
    return _model(nodes, [("x", [1, 3, 4, 4])], [("logits", [1, 2, 1, 1])], init)


def test_every_quantised_op_type_reads_its_activations_through_qdq(tmp_path):
    from edgeseg.quant.qdq import QUANTIZED_OPS, write_qdq

    fp32 = _save(_every_op_model(np.random.default_rng(3)), tmp_path / "fp32.onnx")
    tensors = ["x", "a", "ra", "b", "rb", "s", "mu", "cc", "mp", "ap", "gp", "fl", "mm", "sg", "ge", "rg", "r4"]
    ranges = {name: (-(k + 1.0), k + 1.0) for k, name in enumerate(tensors)}
    write_qdq(fp32, tmp_path / "q.onnx", ranges)
    acts, weights, through, q = _qdq_layout(tmp_path / "q.onnx")
    ops = {n.name: n.op_type for n in q.graph.node}
    assert set(QUANTIZED_OPS) == {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool",
                                  "AveragePool", "GlobalAveragePool"}
    for name, op in ops.items():
        if op in QUANTIZED_OPS and name != "head":
            activation = q.graph.node[[n.name for n in q.graph.node].index(name)].input[0]
            assert through[name][0] is not None, f"{op} {name} reads {activation} in float"
        elif op not in ("QuantizeLinear", "DequantizeLinear"):
            assert all(t is None for t in through[name]), f"{op} {name} reads Q/DQ"
    for name, (scale, zp, _) in acts.items():
        assert scale == pytest.approx(ranges[name][1] / 127, rel=1e-6) and zp == 0, name
    assert {"wc", "wt", "wm", "wg"} <= set(weights) and "wl" not in weights
    _check_tensorrt_rules(tmp_path / "q.onnx")


def test_write_qdq_excludes_given_nodes_and_corrects_only_quantised_biases(tmp_path):
    from edgeseg.quant.qdq import write_qdq

    rng = np.random.default_rng(4)
    model = _conv_relu_pool_model(rng)
    fp32 = _save(model, tmp_path / "fp32.onnx")
    ranges = {"x": (-1.0, 3.0), "h": (-2.0, 6.0), "r": (0.0, 6.0), "m": (0.0, 5.0)}
    b1 = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b1"))
    b2 = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b2"))
    shifts = {"c1": np.array([0.5, -0.25, 1.0, 2.0]), "c2": np.array([3.0, 4.0])}
    kept = write_qdq(fp32, tmp_path / "q.onnx", ranges, bias_shifts=shifts)
    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    np.testing.assert_array_equal(init["b1"], (b1.astype(np.float64) - shifts["c1"]).astype(np.float32))
    np.testing.assert_array_equal(init["b2"], b2)  # c2 is the float head: its own bias
    assert kept == ["c2"]
    # c1 excluded too: float, own bias, nothing quantised before it; duplicates listed once
    kept = write_qdq(fp32, tmp_path / "f.onnx", ranges, nodes_to_exclude=["c1", "c2"], bias_shifts=shifts)
    assert kept == ["c2", "c1"]
    acts, weights, through, q = _qdq_layout(tmp_path / "f.onnx")
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    np.testing.assert_array_equal(init["b1"], b1)
    assert "w1" not in weights and through["c1"] == [None, None, None] and set(acts) == {"r"}


def test_a_residual_add_of_two_conv_branches_reads_the_later_one_in_float(tmp_path):
    from edgeseg.quant.qdq import read_residual_branches_in_float, write_qdq

    rng = np.random.default_rng(5)
    f = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w1"], ["p"], name="first", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["q"], name="second", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["p", "q"], ["s"], name="add"),
             helper.make_node("Add", ["x3", "x3"], ["u"], name="plain"),
             helper.make_node("Relu", ["s"], ["t"], name="relu"),
             helper.make_node("Mul", ["t", "u"], ["v"], name="mul"),
             helper.make_node("Conv", ["v", "w3"], ["logits"], name="head")]
    model = _model(nodes, [("x", [1, 3, 4, 4]), ("x3", [1, 3, 4, 4])], [("logits", [1, 2, 4, 4])],
                   {"w1": f(3, 3, 3, 3), "w2": f(3, 3, 3, 3), "w3": f(2, 3, 1, 1)})
    fp32 = _save(model, tmp_path / "fp32.onnx")
    ranges = {name: (-3.0, 3.0) for name in ("x", "x3", "p", "q", "s", "u", "t", "v")}
    write_qdq(fp32, tmp_path / "q.onnx", ranges, quantize_outputs=True)  # Q/DQ on both conv outputs, kept
    assert read_residual_branches_in_float(onnx.load(str(tmp_path / "q.onnx"))) == ["add"]
    write_qdq(fp32, tmp_path / "in.onnx", ranges)
    acts, _, through, q = _qdq_layout(tmp_path / "in.onnx")
    add = next(n for n in q.graph.node if n.name == "add")
    assert add.input[1] == "q" and through["add"][0] == "p"  # the later conv (second) is the branch, read in float
    assert through["plain"] == ["x3", "x3"]  # an Add of no conv is untouched
    # the Q/DQ pair that fed the branch is gone, and so are the scale and zero point only it read
    assert "q" not in acts and not any(i.name.startswith("q_") for i in q.graph.initializer)
    assert "p" in acts
    _check_tensorrt_rules(tmp_path / "in.onnx")


def test_drop_unread_removes_chains_of_dead_qdq_and_only_their_initializers():
    from edgeseg.quant.qdq import _drop_unread

    init = {"s": np.array(0.1, np.float32), "z": np.array(0, np.int8), "s2": np.array(0.2, np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),  # nobody reads xd
             helper.make_node("QuantizeLinear", ["x", "s2", "z"], ["yq"], name="q2"),
             helper.make_node("DequantizeLinear", ["yq", "s2", "z"], ["y"], name="dq2")]  # a graph output
    model = _model(nodes, [("x", [1])], [("y", [1])], init)
    _drop_unread(model.graph)
    assert [n.name for n in model.graph.node] == ["q2", "dq2"]
    assert sorted(i.name for i in model.graph.initializer) == ["s2", "z"]  # z is still read by q2


# ---------------------------------------------------------------- bias_correction.py and cache_model.py

def test_correct_biases_subtracts_the_shift_and_gives_biasless_convs_one():
    from edgeseg.quant.bias_correction import correct_biases

    rng = np.random.default_rng(6)
    w = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    bias = np.array([0.1, 0.7], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["a"], name="with_bias"),
             helper.make_node("Conv", ["a", "w"], ["c"], name="no_bias"),
             helper.make_node("Conv", ["c", "w", ""], ["d"], name="empty_bias"),
             helper.make_node("Relu", ["d"], ["y"], name="relu"),
             helper.make_node("Conv", ["d", "w", "b"], ["z"], name="untouched")]
    model = _model(nodes, [("x", [1, 2, 2, 2])], [("y", [1, 2, 2, 2]), ("z", [1, 2, 2, 2])], {"w": w, "b": bias})
    shifts = {"with_bias": np.array([0.3, -0.2]), "no_bias": np.array([1.5, 2.5]),
              "empty_bias": np.array([-1.0, 4.0]), "relu": np.array([9.0, 9.0])}
    assert correct_biases(model, shifts) == ["with_bias", "no_bias", "empty_bias"]
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = {n.name: n for n in model.graph.node}
    np.testing.assert_array_equal(init["b"], (bias.astype(np.float64) - shifts["with_bias"]).astype(np.float32))
    assert list(node["no_bias"].input) == ["a", "w", "no_bias_corrected_bias"]
    assert list(node["empty_bias"].input) == ["c", "w", "empty_bias_corrected_bias"]
    np.testing.assert_array_equal(init["no_bias_corrected_bias"], np.array([-1.5, -2.5], np.float32))
    np.testing.assert_array_equal(init["empty_bias_corrected_bias"], np.array([1.0, -4.0], np.float32))
    assert init["no_bias_corrected_bias"].dtype == np.float32 and init["b"].dtype == np.float32
    assert list(node["relu"].input) == ["d"]
    onnx.checker.check_model(model)


def test_cache_model_is_the_fp32_graph_with_corrected_biases_and_pinnable_float_nodes(tmp_path):
    from edgeseg.quant.cache_model import write_cache_model

    rng = np.random.default_rng(7)
    w = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["a"]),  # unnamed: gets Conv_0 as write_qdq names it
             helper.make_node("Conv", ["a", "w", "b2"], ["c"], name="head"),
             helper.make_node("Shape", ["c"], ["shape"], name="shape"),
             helper.make_node("Constant", [], ["k"], name="const",
                              value=numpy_helper.from_array(np.array(2.0, np.float32))),
             helper.make_node("Mul", ["c", "k"], ["m"], name="scale"),
             helper.make_node("Cast", ["m"], ["h"], name="half", to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["y"], name="back", to=TensorProto.FLOAT),
             helper.make_node("Cast", ["shape"], ["sf"], name="shape_float", to=TensorProto.FLOAT),
             helper.make_node("Cast", ["sf"], ["si"], name="shape_int", to=TensorProto.INT32)]
    model = _model(nodes, [("x", [1, 2, 2, 2])], [("y", [1, 2, 2, 2])],
                   {"w": w, "b": np.array([1.0, 2.0], np.float32), "b2": np.array([5.0, 6.0], np.float32)})
    model.graph.output.append(helper.make_tensor_value_info("si", TensorProto.INT32, [4]))
    _save(model, tmp_path / "fp32.onnx")
    floats = ["head", "shape", "const", "scale", "half", "back", "shape_float", "shape_int"]
    changed, pinned = write_cache_model(tmp_path / "fp32.onnx", tmp_path / "twin.onnx",
                                        {"Conv_0": np.array([0.5, 1.5]), "head": np.array([1.0, 1.0])}, floats)
    assert changed == ["Conv_0"]  # the head is kept in float: its bias stays
    assert pinned == ["head", "scale", "half", "back", "shape_float"]  # no Constant, no integer output
    twin = onnx.load(str(tmp_path / "twin.onnx"))
    init = {i.name: numpy_helper.to_array(i) for i in twin.graph.initializer}
    np.testing.assert_array_equal(init["b"], [0.5, 0.5])
    np.testing.assert_array_equal(init["b2"], [5.0, 6.0])
    assert [n.name for n in twin.graph.node][0] == "Conv_0"
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in twin.graph.node)


# ---------------------------------------------------------------- collect.py

def test_float_tensors_are_the_float_activations_only():
    from edgeseg.quant.collect import float_tensors

    w = np.ones((2, 2, 1, 1), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
             helper.make_node("Shape", ["a"], ["shape"], name="shape"),
             helper.make_node("Cast", ["shape"], ["shape_f"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Constant", [], ["k"], name="const",
                              value=numpy_helper.from_array(np.array(2.0, np.float32))),
             helper.make_node("Mul", ["a", "k"], ["m"], name="mul"),
             helper.make_node("Cast", ["m"], ["mi"], name="to_int", to=TensorProto.INT32),
             helper.make_node("Relu", ["m"], ["y"], name="relu"),
             helper.make_node("Identity", ["w"], ["w_copy"], name="weight_copy")]
    model = _model(nodes, [("x", [1, 2, 2, 2]), ("w", [2, 2, 1, 1])], [("y", [1, 2, 2, 2])], {"w": w})
    # x is an input; w is an input too but an initializer (old exporters list weights as inputs)
    assert float_tensors(model) == ["x", "a", "shape_f", "m", "y", "w_copy"]


def _two_output_model():
    """x -> Mul by 2 -> a -> Relu -> y (a and y as tensors to collect)."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"], name="mul"), helper.make_node("Relu", ["a"], ["y"], name="r")]
    return _model(nodes, [("x", [1, 1, 2, 3])], [("y", [1, 1, 2, 3])], {"two": np.array(2.0, np.float32)})


def test_stream_activations_yield_the_tensors_of_each_batch(tmp_path):
    from edgeseg.quant.collect import stream_activations

    path = _save(_two_output_model(), tmp_path / "m.onnx")
    batches = [np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3) - 2.5, np.full((1, 1, 2, 3), -1.0, np.float32)]
    got = list(stream_activations(path, iter(batches), ["a", "y", "x"]))
    assert len(got) == 2
    for values, x in zip(got, batches):
        assert list(values) == ["a", "y", "x"]
        np.testing.assert_array_equal(values["a"], 2 * x)
        np.testing.assert_array_equal(values["y"], np.maximum(2 * x, 0))
        np.testing.assert_array_equal(values["x"], x)


def test_collect_histograms_counts_every_value_and_advances_once_a_batch(tmp_path):
    from edgeseg.quant.collect import collect_histograms

    path = _save(_two_output_model(), tmp_path / "m.onnx")
    batches = [np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3) - 2.5, np.full((1, 1, 2, 3), -4.0, np.float32)]
    steps = []
    histograms = collect_histograms(path, iter(batches), steps.append)
    assert steps == [1, 1] and set(histograms) == {"x", "a", "y"}
    assert histograms["x"].min == -4.0 and histograms["x"].max == 2.5 and histograms["x"].counts.sum() == 12
    assert histograms["a"].amax("minmax") == 8.0 and histograms["y"].min == 0.0 and histograms["y"].max == 5.0
    reference = StreamingHistogram()
    for x in batches:
        reference.update(np.maximum(2 * x, 0))
    np.testing.assert_array_equal(histograms["y"].counts, reference.counts)
    assert collect_histograms(path, iter(batches))["a"].counts.sum() == 12  # no progress callback needed


# ---------------------------------------------------------------- conv_error.py

def test_int8_per_channel_by_hand():
    from edgeseg.quant.conv_error import int8_per_channel

    w = np.array([[1.0, -0.5, 0.25, 0.1], [0.0, 0.0, 0.0, 0.0], [-2.0, 1.0, 0.0, 0.5]], np.float32).reshape(3, 1, 2, 2)
    got = int8_per_channel(w)
    assert got.shape == w.shape and got.dtype == np.float32
    expected = np.array([[127, -64, 32, 13], [0, 0, 0, 0], [-127, 64, 0, 32]], np.float64)  # round half to even
    expected *= np.array([1 / 127, 1.0, 2 / 127])[:, None]
    np.testing.assert_allclose(got.reshape(3, 4), expected, rtol=1e-6)
    assert int8_per_channel(w.astype(np.float64)).dtype == np.float64


@pytest.mark.parametrize("low, high, symmetric", [(-1.0, 3.0, True), (-1.0, 3.0, False), (0.5, 2.0, False),
                                                   (-127.0, 127.0, True)])
def test_activation_quantizer_rounds_and_clips_as_onnx_runtime_does(low, high, symmetric):
    from edgeseg.quant.conv_error import activation_quantizer

    values = np.array([-5.0, -1.0, -0.013, 0.0, 0.01, 0.7, 2.99, 3.0, 10.0, 130.4], np.float32)
    got = activation_quantizer(low, high, symmetric)(values)
    assert got.dtype == np.float32
    if symmetric:  # int8 -127..127 over max(|low|, |high|)
        scale = max(abs(low), abs(high)) / 127
        expected = np.clip(np.round(values / scale), -127, 127) * scale
    else:  # uint8 0..255 over [min(low, 0), max(high, 0)], zero point round(-low / scale)
        lo, hi = min(low, 0.0), max(high, 0.0)
        scale = (hi - lo) / 255
        zero = round(-lo / scale)
        expected = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert np.unique(np.round(got / scale, 3)).size == np.unique(expected).size


def test_measurable_convs_are_2d_constant_weight_convs_reading_measured_tensors():
    from edgeseg.quant.conv_error import measurable_convs

    init = {"w": np.ones((2, 2, 1, 1), np.float32), "w1d": np.ones((2, 2, 1), np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="ok"),
             helper.make_node("Conv", ["a", "w"], ["b"], name="skipped"),
             helper.make_node("Conv", ["x", "computed"], ["c"], name="computed_weights"),
             helper.make_node("Conv", ["other", "w"], ["d"], name="unmeasured_input"),
             helper.make_node("Conv", ["x1d", "w1d"], ["e"], name="one_d"),
             helper.make_node("ConvTranspose", ["x", "w"], ["f"], name="transposed"),
             helper.make_node("Conv", ["b", "w"], ["g"], name="also_ok")]
    model = _model(nodes, [("x", [1, 2, 2, 2])], [("g", [1, 2, 2, 2])], init)
    got = measurable_convs(model, {"x", "a", "b", "x1d"}, skip=["skipped"])
    assert [n.name for n in got] == ["ok", "also_ok"]
    assert [n.name for n in measurable_convs(model, ["x", "a", "b"])] == ["ok", "skipped", "also_ok"]


def _ort_conv(x, w, **attrs):
    import onnxruntime as ort

    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    model = _model([node], [("x", list(x.shape))], [("y", None)], {"w": w})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0], node


@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1, 1, 1]}, {"pads": [0, 1, 2, 0]}, {"pads": [1, 2, 1, 2]},
                                   {"strides": [2, 1], "pads": [1, 1, 1, 1]}, {"dilations": [2, 1]},
                                   {"group": 2, "pads": [1, 0, 1, 0]}, {"pads": [0, 1, 2, 1]},
                                   {"pads": [0, 1, 1, 1]}, {"pads": [0, 0, 2, 0]}, {"pads": [1, 0, 1, 1]}])
def test_torch_conv_of_an_onnx_conv_is_onnx_runtimes(attrs):
    import torch

    from edgeseg.quant.conv_error import _conv

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 7, 9)).astype(np.float32)
    w = rng.standard_normal((4, 4 // attrs.get("group", 1), 3, 3)).astype(np.float32)
    expected, node = _ort_conv(x, w, **attrs)
    got = _conv(torch.from_numpy(x), torch.from_numpy(w), node).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_measured_shift_is_the_mean_int8_minus_fp32_output_over_every_pixel():
    """Reference: ONNX Runtime runs the conv on x and on x rounded by hand with hand-rounded weights."""
    from edgeseg.quant.conv_error import measure_shifts

    rng = np.random.default_rng(9)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    model = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], strides=[1, 2])],
                   [("x", [1, 2, None, None])], [("y", None)], {"w": w, "b": np.ones(3, np.float32)})
    images = [np.abs(rng.standard_normal((1, 2, 6, 10))).astype(np.float32) * 2,
              np.abs(rng.standard_normal((2, 2, 4, 6))).astype(np.float32) * 2]
    candidates = {"x": {"tight": (-1.0, 1.0), "wide": (-8.0, 8.0)}}
    shifts = measure_shifts(model, list(model.graph.node), candidates, iter({"x": x} for x in images), symmetric=True)
    int8, scale = _int8_weights(w)
    w_int8 = (int8 * scale[:, None, None, None]).astype(np.float32)
    assert set(shifts) == {"conv"} and set(shifts["conv"]) == {"tight", "wide"}
    for label, (low, high) in candidates["x"].items():
        step = max(abs(low), abs(high)) / 127
        diffs = []
        for x in images:
            xq = (np.clip(np.round(x / step), -127, 127) * step).astype(np.float32)
            diff = (_ort_conv(xq, w_int8, pads=[1, 1, 1, 1], strides=[1, 2])[0].astype(np.float64)
                    - _ort_conv(x, w, pads=[1, 1, 1, 1], strides=[1, 2])[0])
            diffs.append(diff.transpose(1, 0, 2, 3).reshape(3, -1))
        expected = np.concatenate(diffs, axis=1).mean(axis=1)  # pooled over every output pixel of every image
        assert shifts["conv"][label].shape == (3,)
        np.testing.assert_allclose(shifts["conv"][label], expected, rtol=1e-4, atol=1e-6, err_msg=label)
    assert np.abs(shifts["conv"]["tight"]).max() > 10 * np.abs(shifts["conv"]["wide"]).max() / 10 > 0
    # asymmetric: uint8 over [0, 4] with zero point 0
    asym = measure_shifts(model, list(model.graph.node), {"x": {"a": (0.0, 4.0)}}, iter([{"x": images[0]}]),
                          symmetric=False)
    xq = (np.clip(np.round(images[0] / (4 / 255)), 0, 255) * (4 / 255)).astype(np.float32)
    expected = (_ort_conv(xq, w_int8, pads=[1, 1, 1, 1], strides=[1, 2])[0].astype(np.float64)
                - _ort_conv(images[0], w, pads=[1, 1, 1, 1], strides=[1, 2])[0]).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(asym["conv"]["a"], expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- selection.py

def test_agreement_pools_pixels_over_batches_of_different_sizes(tmp_path):
    from edgeseg.quant.selection import PredictionAgreement

    def model(path, scale):
        node = helper.make_node("Mul", ["x", "s"], ["y"])
        _save(_model([node], [("x", [None, 2, None, None])], [("y", None)],
                     {"s": np.array(scale, np.float32).reshape(1, 2, 1, 1)}), path)
        return path

    a = np.zeros((1, 2, 1, 3), np.float32)
    a[0, 1] = [1.0, -1.0, -1.0]  # class 1 wins on the first pixel only
    b = np.zeros((2, 2, 1, 3), np.float32)
    b[:, 0] = 1.0  # class 0 everywhere
    judge = PredictionAgreement(model(tmp_path / "ref.onnx", [1, 1]), [a, b])
    assert judge.batches == [a, b] and [r.shape for r in judge.reference] == [(1, 1, 3), (2, 1, 3)]
    assert judge.percent(tmp_path / "ref.onnx") == 100.0
    # flipping class 1's sign turns each pixel of a (class 0 <-> 1) and no pixel of b: 6 of 9 agree
    assert judge.percent(model(tmp_path / "flip.onnx", [1, -1])) == round(100 * 6 / 9, 4) == 66.6667
    # flipping class 0's sign makes class 1 win on both of b's images and leaves a as it was: 3 of 9
    assert judge.percent(model(tmp_path / "neg.onnx", [-1, 1])) == round(100 * 3 / 9, 4) == 33.3333


# ---------------------------------------------------------------- sensitivity.py

def _evalset(count=5):
    from edgeseg.quant.sensitivity import EvalSet
    from edgeseg.spec import DatasetInfo

    batches = [np.full((1, 3, 2, 4), float(i), np.float32) for i in range(count)]
    labels = [np.full((2, 4), i % 3, np.uint8) for i in range(count)]
    return EvalSet(batches, labels, DatasetInfo(num_classes=3))


def test_evalset_subset_and_halves():
    evalset = _evalset(5)
    sub = evalset.subset(3)
    assert [int(b[0, 0, 0, 0]) for b in sub.batches] == [0, 2, 4] and [int(l[0, 0]) for l in sub.labels] == [0, 2, 1]
    assert sub.info is evalset.info
    assert [int(b[0, 0, 0, 0]) for b in evalset.subset(9).batches] == [0, 1, 2, 3, 4]
    assert [int(b[0, 0, 0, 0]) for b in evalset.subset(2).batches] == [0, 4]
    first, second = evalset.halves()
    assert [int(b[0, 0, 0, 0]) for b in first.batches] == [0, 1, 2]
    assert [int(b[0, 0, 0, 0]) for b in second.batches] == [3, 4]
    assert [int(l[0, 0]) for l in first.labels] == [0, 1, 2] and [int(l[0, 0]) for l in second.labels] == [0, 1]
    assert first.info is evalset.info and second.info is evalset.info
    assert [len(h.batches) for h in _evalset(4).halves()] == [2, 2]


def _class_model(path, classes=3):
    """logits = the input's first ``classes`` channels: the class map is the argmax of the image itself."""
    node = helper.make_node("Identity", ["x"], ["y"])
    return _save(_model([node], [("x", [1, classes, 2, 4])], [("y", [1, classes, 2, 4])], {}), path)


def test_onnx_miou_is_the_miou_of_one_confusion_matrix_over_every_image(tmp_path):
    from edgeseg.quant.sensitivity import EvalSet, onnx_frame_confusions, onnx_miou
    from edgeseg.spec import DatasetInfo

    x1 = np.zeros((1, 3, 2, 4), np.float32)
    x1[0, 0, :, :2] = 1  # predicted 0 left, 1 right
    x1[0, 1, :, 2:] = 1
    x2 = np.zeros((1, 3, 2, 4), np.float32)
    x2[0, 2] = 1  # predicted 2 everywhere
    l1 = np.array([[0, 0, 1, 1], [0, 1, 1, 255]], np.uint8)
    l2 = np.array([[2, 2, 2, 2], [0, 0, 7, 7]], np.uint8)  # 7 is the ignore value here
    evalset = EvalSet([x1, x2], [l1, l2], DatasetInfo(num_classes=3, ignore_index=7))
    # by hand (255 counts as no class: outside 0..2): class 0: tp 3, fp 1 (label 1 at [1,1]), fn 2 (x2's
    # bottom-left, predicted 2) -> 3/6; class 1: tp 3, fn 1 -> 3/4; class 2: tp 4, fp 2 -> 4/6
    confusion = np.zeros((3, 3), np.int64)
    for pred, label in ((x1[0].argmax(0), l1), (x2[0].argmax(0), l2)):
        keep = label < 3
        np.add.at(confusion, (label[keep], pred[keep]), 1)
    tp = np.diag(confusion)
    iou = tp / (confusion.sum(0) + confusion.sum(1) - tp)
    assert onnx_miou(_class_model(tmp_path / "m.onnx"), evalset) == round(100 * iou.mean(), 4)
    assert onnx_miou(_class_model(tmp_path / "m.onnx"), evalset) == round(100 * (3 / 6 + 3 / 4 + 4 / 6) / 3, 4)
    # the per-image matrices are each image's own counts: x1 has 3 class-0 and 3 class-1 pixels right and one
    # label-1 pixel predicted 0; x2 has 4 class-2 right and two label-0 pixels predicted 2
    frames = onnx_frame_confusions(_class_model(tmp_path / "m.onnx"), evalset)
    assert frames.tolist() == [[[3, 0, 0], [1, 3, 0], [0, 0, 0]], [[0, 0, 2], [0, 0, 0], [0, 0, 4]]]


def test_onnx_miou_scores_at_the_labels_size(tmp_path):
    from edgeseg.quant.sensitivity import EvalSet, onnx_miou
    from edgeseg.spec import DatasetInfo

    x = np.zeros((1, 3, 2, 4), np.float32)
    x[0, 1] = 1  # class 1 everywhere
    label = np.ones((4, 8), np.uint8)
    label[0, 0] = 0  # one pixel of class 0 at twice the size
    evalset = EvalSet([x], [label], DatasetInfo(num_classes=3))
    assert onnx_miou(_class_model(tmp_path / "m.onnx"), evalset) == round(100 * (0 + 31 / 32) / 2, 4)


def test_load_eval_set_preprocesses_the_val_split(tmp_path):
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset
    from edgeseg.data.dataset import resolve_split
    from edgeseg.quant.sensitivity import load_eval_set
    from edgeseg.runtime.preprocess import preprocess
    from edgeseg.spec import InputSpec

    root = write_dataset(tmp_path / "d", SyntheticConfig(seed=1, num_train=1, num_val=3, height=16, width=24))
    spec = InputSpec(height=8, width=12)
    evalset = load_eval_set(str(root), spec, 2)
    split = resolve_split(str(root), "val")
    assert len(evalset.batches) == 2 and evalset.info.num_classes == split.info.num_classes
    for i in range(2):
        np.testing.assert_array_equal(evalset.batches[i], preprocess(split.image(i), spec))
        np.testing.assert_array_equal(evalset.labels[i], split.label(i))
    assert len(load_eval_set(str(root), spec).batches) == 3
    assert len(load_eval_set(str(root), spec, 9).batches) == 3
    assert load_eval_set(str(root), spec, ignore_index=200).info.ignore_index == split.info.ignore_index


def test_quantized_layers_are_the_compute_layers_not_kept(tmp_path):
    from edgeseg.quant.sensitivity import quantized_layers

    w = np.ones((2, 2, 1, 1), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("ConvTranspose", ["b", "w"], ["c"], name="up"),
             helper.make_node("Conv", ["c", "w"], ["y"], name="head")]
    path = _save(_model(nodes, [("x", [1, 2, 2, 2])], [("y", [1, 2, 2, 2])], {"w": w}), tmp_path / "m.onnx")
    assert quantized_layers(path, ["head"]) == ["Conv_0", "up"]
    assert quantized_layers(path, []) == ["Conv_0", "up", "head"]


class _FakeQuantizer:
    """miou from a table: by the float layers' tuple (rank_layers) or by how many are float (fit_budget)."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def miou(self, float_layers, evalset=None):
        self.calls.append((list(float_layers), evalset))
        key = tuple(float_layers)
        return self.table[key] if key in self.table else self.table[len(float_layers)]


def test_rank_layers_puts_the_layer_that_recovers_most_first():
    from edgeseg.quant.sensitivity import rank_layers

    quantizer = _FakeQuantizer({("a",): 50.0, ("b",): 57.5, ("c",): 52.0})
    steps = []
    evalset = object()
    assert rank_layers(quantizer, ["a", "b", "c"], evalset, steps.append) == [("b", 57.5), ("c", 52.0), ("a", 50.0)]
    assert steps == [1, 1, 1] and all(e is evalset for _, e in quantizer.calls)
    assert rank_layers(quantizer, ["c", "a"], evalset) == [("c", 52.0), ("a", 50.0)]


def test_fit_budget_moves_layers_to_float_until_the_drop_is_within_budget():
    from edgeseg.quant.sensitivity import fit_budget

    ranking = [("b", 57.5), ("c", 52.0), ("a", 50.0)]
    table = {0: 50.0, 1: 55.0, 2: 58.0, 3: 59.0}
    steps = []
    layers, miou, records = fit_budget(_FakeQuantizer(table), ranking, 60.0, 2.5, steps.append)
    assert layers == ["b", "c"] and miou == 58.0 and steps == [1, 1]
    assert records == [{"float_layers": 1, "added": "b", "miou": 55.0}, {"float_layers": 2, "added": "c", "miou": 58.0}]
    # a drop exactly at the budget is within it
    assert fit_budget(_FakeQuantizer(table), ranking, 60.0, 5.0)[:2] == (["b"], 55.0)
    assert fit_budget(_FakeQuantizer(table), ranking, 60.0, 10.0) == ([], 50.0, [])
    # over budget with every layer tried: all of them, the last mIoU
    assert fit_budget(_FakeQuantizer(table), ranking, 60.0, 0.5)[:2] == (["b", "c", "a"], 59.0)


def test_quantizer_writes_candidates_in_a_folder_that_lives_as_long_as_its_with_block(tmp_path, monkeypatch):
    import edgeseg.quant.sensitivity as sensitivity

    rng = np.random.default_rng(10)
    fp32 = _save(_conv_relu_pool_model(rng), tmp_path / "fp32.onnx")
    ranges = {"x": (-1.0, 3.0), "h": (-2.0, 6.0), "r": (0.0, 6.0), "m": (0.0, 5.0)}
    evalset = _evalset(2)
    other = _evalset(1)
    seen = []
    monkeypatch.setattr(sensitivity, "write_qdq", lambda src, dst, r, **kw: seen.append((src, dst, r, kw)))
    monkeypatch.setattr(sensitivity, "onnx_miou", lambda path, e: (path.exists() or True) and (path, e))
    shifts = {"c1": np.zeros(4)}
    quantizer = sensitivity.Quantizer(fp32, ranges, False, evalset, shifts, True)
    with pytest.raises(RuntimeError, match="use Quantizer inside a `with` block"):
        quantizer.folder
    with quantizer as q:
        assert q is quantizer and q.folder.is_dir() and q.folder.name.startswith("edgeseg-sensitivity-")
        folder = q.folder
        path, used = q.miou(["c1"])
        assert used is evalset and path == folder / "candidate.onnx"
        assert q.miou([], other)[1] is other
    assert not folder.exists() and quantizer._folder is None
    assert seen[0] == (fp32, folder / "candidate.onnx", ranges, {
        "symmetric": False, "nodes_to_exclude": ["c1"], "bias_shifts": shifts, "quantize_outputs": True})
    assert seen[1][3]["nodes_to_exclude"] == []
    with sensitivity.Quantizer(fp32, ranges, True, evalset) as plain:  # defaults: no shifts, inputs only
        plain.miou([])
    assert seen[2][3] == {"symmetric": True, "nodes_to_exclude": [], "bias_shifts": None, "quantize_outputs": False}


def test_load_eval_set_without_dataset_yaml_takes_the_models_classes_and_the_ignore_index(tmp_path):
    from edgeseg.data.dataset import ClassCount
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset
    from edgeseg.quant.sensitivity import load_eval_set
    from edgeseg.spec import InputSpec

    root = write_dataset(tmp_path / "d", SyntheticConfig(seed=1, num_train=1, num_val=2, height=16, width=24))
    from PIL import Image

    (root / "dataset.yaml").unlink()  # a bare folder: nothing but the caller says what its labels mean
    spec = InputSpec(height=8, width=12)
    assert load_eval_set(str(root), spec, classes=ClassCount(9, "--num-classes")).info.ignore_index == 255
    for path in (root / "val" / "labels").iterdir():  # unlabelled pixels marked 200 instead of 255
        label = np.array(Image.open(path))
        Image.fromarray(np.where(label == 255, 200, label).astype(np.uint8)).save(path)
    evalset = load_eval_set(str(root), spec, classes=ClassCount(9, "--num-classes"), ignore_index=200)
    assert evalset.info.num_classes == 9 and evalset.info.ignore_index == 200 and len(evalset.batches) == 2
    assert (evalset.labels[0] == 200).any()


def _qdq_pair(tensor, nodes, init, scale=0.1):
    """Append Q -> DQ of ``tensor`` to ``nodes``; the dequantised tensor's name."""
    init[f"{tensor}_s"] = np.array(scale, np.float32)
    init[f"{tensor}_z"] = np.array(0, np.int8)
    nodes.append(helper.make_node("QuantizeLinear", [tensor, f"{tensor}_s", f"{tensor}_z"], [f"{tensor}_q"]))
    nodes.append(helper.make_node("DequantizeLinear", [f"{tensor}_q", f"{tensor}_s", f"{tensor}_z"], [f"{tensor}_dq"]))
    return f"{tensor}_dq"


def test_residual_rewiring_by_hand_only_takes_a_conv_or_convtranspose_behind_one_q_dq_pair():
    from edgeseg.quant.qdq import read_residual_branches_in_float

    w = np.ones((2, 2, 1, 1), np.float32)
    init = {"w": w, "c": np.ones((1, 2, 2, 2), np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
             helper.make_node("ConvTranspose", ["x", "w"], ["t"], name="up"),
             helper.make_node("Relu", ["x"], ["r"], name="relu")]
    a_dq, t_dq, r_dq = (_qdq_pair(name, nodes, init) for name in ("a", "t", "r"))
    init["k_s"], init["k_z"] = np.array(0.1, np.float32), np.array(0, np.int8)
    nodes += [helper.make_node("DequantizeLinear", ["k8", "k_s", "k_z"], ["k_dq"], name="dq_of_a_constant"),
              helper.make_node("Identity", ["a_q"], ["a_q_copy"], name="copy"),
              helper.make_node("DequantizeLinear", ["r", "k_s", "k_z"], ["r_raw_dq"], name="dq_of_relu"),
              helper.make_node("Add", [r_dq, t_dq], ["s1"], name="add_up"),  # ConvTranspose branch
              helper.make_node("Mul", [r_dq, a_dq], ["s2"], name="mul"),  # not an Add
              helper.make_node("Add", ["x", "c"], ["s3"], name="add_input"),  # graph input and a constant
              helper.make_node("Add", ["k_dq", r_dq], ["s4"], name="add_constant"),  # DQ of an initializer
              helper.make_node("Add", ["a_q_copy", r_dq], ["s5"], name="add_copy"),  # no DQ between
              helper.make_node("Add", ["r_raw_dq", r_dq], ["s6"], name="add_dq_of_relu")]  # DQ straight off a Relu
    init["k8"] = np.ones((1, 2, 2, 2), np.int8)
    outputs = [(f"s{k}", None) for k in range(1, 7)] + [("a_q", None)]
    model = _model(nodes, [("x", [1, 2, 2, 2])], outputs, init)
    assert read_residual_branches_in_float(model) == ["add_up"]
    node = {n.name: n for n in model.graph.node}
    assert list(node["add_up"].input) == [r_dq, "t"]
    assert list(node["mul"].input) == [r_dq, a_dq] and list(node["add_input"].input) == ["x", "c"]
    assert list(node["add_constant"].input) == ["k_dq", r_dq] and list(node["add_copy"].input) == ["a_q_copy", r_dq]
    assert list(node["add_dq_of_relu"].input) == ["r_raw_dq", r_dq]
    # the ConvTranspose's Q/DQ pair is read by nothing now: gone with its scale and zero point
    assert not [n for n in model.graph.node if n.output[0] in ("t_q", "t_dq")]
    assert "t_s" not in {i.name for i in model.graph.initializer} and "a_s" in {i.name for i in model.graph.initializer}


def test_activations_run_on_the_device_asked_for(tmp_path, monkeypatch):
    import edgeseg.runtime.onnxruntime_runner as runner
    from edgeseg.quant.collect import collect_histograms, stream_activations

    asked = []
    monkeypatch.setattr(runner, "providers_for", lambda device: asked.append(device) or ["CPUExecutionProvider"])
    path = _save(_two_output_model(), tmp_path / "m.onnx")
    batch = np.ones((1, 1, 2, 3), np.float32)
    list(stream_activations(path, [batch], ["a"], device="cuda"))
    list(stream_activations(path, [batch], ["a"], device="cpu"))
    list(stream_activations(path, [batch], ["a"], device="tensorrt"))  # what is not cuda runs on the CPU
    list(stream_activations(path, [batch], ["a"]))
    collect_histograms(path, [batch], device="cuda")
    collect_histograms(path, [batch])
    assert asked == ["cuda", "cpu", "cpu", "cpu", "cuda", "cpu"]
