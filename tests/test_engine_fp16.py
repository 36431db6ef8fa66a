"""edgeseg/engine/fp16_onnx.py on a graph written here: what TensorRT 11's strongly typed FP16 build is handed.

References: the graph's own weights cast to float16 by numpy, ONNX Runtime's float32 run of
the source, and the order rule every ONNX graph must obey (a node after its inputs).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.engine.fp16_onnx import _sort_topologically, write_fp16_onnx
from edgeseg.errors import EdgesegError


def _source(path, big: float = 1.0):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    weight[0, 0, 0, 0] = big
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weight


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _in_order(graph) -> bool:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        if not all(name in available for name in node.input):
            return False
        available.update(node.output)
    return True


def test_the_fp16_copy_keeps_float32_io_computes_in_float16_and_is_in_order(tmp_path):
    weight = _source(tmp_path / "m.onnx")
    out = write_fp16_onnx(tmp_path / "m.onnx", tmp_path / "m.fp16.onnx")
    assert out == tmp_path / "m.fp16.onnx" and not list(tmp_path.glob("*.tmp*"))
    model = onnx.load(str(out))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert stored["w"].dtype == np.float16 and np.array_equal(stored["w"], weight.astype(np.float16))
    assert _in_order(model.graph)  # the converter appends its input Cast after the Conv that reads it
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(tmp_path / "m.onnx", x), atol=0.02)


def test_float16_io_when_asked_and_values_past_its_range_clamped(tmp_path):
    _source(tmp_path / "m.onnx", big=1e6)
    model = onnx.load(str(write_fp16_onnx(tmp_path / "m.onnx", tmp_path / "h.onnx", keep_io_types=False)))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    weight = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["w"]
    assert weight[0, 0, 0, 0] == np.float16(65504)  # not inf


def test_sorting_puts_every_node_after_its_inputs_and_refuses_a_cycle():
    nodes = [helper.make_node("Relu", ["a"], ["b"], name="second"), helper.make_node("Neg", ["x"], ["a"], name="first"),
             helper.make_node("Add", ["b", "a"], ["y"], name="third")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    _sort_topologically(graph)
    assert [n.name for n in graph.node] == ["first", "second", "third"]
    optional = helper.make_graph([helper.make_node("Clip", ["x", "", "m"], ["y"], name="clip"),
                                  helper.make_node("Neg", ["x"], ["m"], name="neg")], "o",
                                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    _sort_topologically(optional)  # an empty input name is an absent optional input, not a missing tensor
    assert [n.name for n in optional.node] == ["neg", "clip"]
    cycle = helper.make_graph([helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Neg", ["a"], ["b"])], "c",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    with pytest.raises(EdgesegError) as refused:
        _sort_topologically(cycle)
    assert str(refused.value) == ("The FP16 ONNX has a cycle or a missing input; report this with the model "
                                  "attached.")


def test_a_trimmed_onnxruntime_is_one_sentence(tmp_path, monkeypatch):
    import sys

    _source(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime.transformers.float16", None)  # its import now fails
    with pytest.raises(EdgesegError) as refused:
        write_fp16_onnx(tmp_path / "m.onnx", tmp_path / "h.onnx")
    assert str(refused.value) == ("Writing an FP16 ONNX needs onnxruntime's transformers tools; install the full "
                                  "onnxruntime (or onnxruntime-gpu) wheel.")
    assert not (tmp_path / "h.onnx").exists()
