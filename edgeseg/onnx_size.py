"""Parameters and multiply-accumulates of an ONNX model, counted from its graph.

Every artifact edgeseg makes carries these figures in its sidecar, measured on the
PyTorch model (``edgeseg.arch.profile``). A model exported by another tool, or an
export of a checkpoint made elsewhere, has no such figure, so this counts them from
the graph itself, with the same convention as the PyTorch counter (and thop, fvcore
and Torch-Pruning's ``count_ops``):

- parameters: the elements of the learned tensors the graph computes with, i.e. the
  weights and biases of Conv, ConvTranspose, Gemm and MatMul, the scale and shift of
  normalisations, PReLU slopes, and learned tensors added or multiplied elementwise
  (LayerNorm's scale and shift below opset 17, position embeddings). A Q/DQ model's
  INT8 weights count once; their scales and zero points, shape constants and other
  integer tensors do not count. Shared tensors count once.
- MACs of one image: convolutions, transposed convolutions and linear layers
  (Gemm, and MatMul with a weight operand), from the shapes that
  ``onnx.shape_inference`` gives every tensor. Elementwise operations, pooling,
  normalisation, resizing and a MatMul of two activations (attention's Q·Kᵀ) are not
  counted, as the PyTorch counter does not count them.

One difference with the PyTorch figure is the graph's, not the counter's: exporters fold
each BatchNorm into the convolution before it, so an exported graph holds the
convolution's new bias (C) instead of the BatchNorm's scale and shift (2C). The MACs
are the same.

Deploy side: no torch, Python 3.8.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

# what a row or a description says where its figures come from the graph (no sidecar says them)
COUNTED = "onnx graph"

# op type -> the input slots that hold learned tensors (weights, biases, scales and shifts)
WEIGHT_INPUTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "FusedConv": (1, 2), "ConvInteger": (1,), "QLinearConv": (3, 8),
    "Gemm": (0, 1, 2), "FusedGemm": (0, 1, 2), "MatMul": (0, 1), "FusedMatMul": (0, 1), "MatMulInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2), "SimplifiedLayerNormalization": (1,), "PRelu": (1,),
}
# elementwise ops whose multi-element constant operand is a learned tensor (a decomposed norm's scale and shift,
# the bias of a Linear exported as MatMul + Add, a position embedding); a one-element operand is a constant (eps, 6)
ELEMENTWISE = ("Add", "Mul", "Sub")
# ops a weight passes through on its way from its initializer to the node that computes with it
PASS_THROUGH = ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast", "Transpose", "Reshape", "Squeeze",
                "Unsqueeze", "Flatten")
CONV_OPS = {"Conv": 1, "FusedConv": 1, "ConvInteger": 1, "QLinearConv": 3}  # op -> slot of its weight
MATMUL_OPS = ("MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul")
# ops that compute on integer weights themselves (ONNX Runtime's QOperator format), with no DequantizeLinear
INTEGER_OPS = ("ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul")
_FLOAT_TYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass(frozen=True)
class GraphSize:
    """What the graph says about its size: ``macs`` is None when some counted node's shapes stay unknown."""

    params: int
    macs: Optional[int]
    input_size: Optional[Tuple[int, int]]  # the (height, width) the MACs are for
    unsized: Tuple[str, ...] = ()  # nodes whose shapes shape inference could not tell, when macs is None

    def to_dict(self) -> dict:
        return {"params": self.params, "macs": self.macs, "counted": COUNTED,
                "macs_input": list(self.input_size) if self.input_size else None}


def count_graph(model, input_size: Optional[Sequence[int]] = None) -> GraphSize:
    """Parameters and MACs of one image of the ONNX ``model`` (a path or a ModelProto).

    ``input_size`` (height, width) fixes a dynamic spatial size; a static one is the
    graph's own, and MACs are always of a batch of one.

    >>> count_graph("deeplab.onnx", input_size=(520, 520)).macs  # doctest: +SKIP
    """
    path = Path(model) if isinstance(model, (str, Path)) else None
    model = _model(model)
    return GraphSize(count_params(model), *_count_macs(model, input_size, path))


def count_params(model) -> int:
    """Elements of the learned tensors the ONNX ``model``'s nodes compute with (see the module's docstring).

    >>> count_params("model.onnx")  # doctest: +SKIP
    """
    model = _model(model)
    graph = model.graph
    constants = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    counted: Dict[str, int] = {}
    for node in graph.node:
        slots = WEIGHT_INPUTS.get(node.op_type)
        if slots is not None:
            for slot in slots:
                if slot < len(node.input) and node.input[slot]:
                    _count_source(node.input[slot], constants, producer, counted, minimum=1,
                                  integer=node.op_type in INTEGER_OPS)
        elif node.op_type in ELEMENTWISE:
            for name in node.input:
                _count_source(name, constants, producer, counted, minimum=2)
    return int(sum(counted.values()))


def count_macs(model, input_size: Optional[Sequence[int]] = None) -> Optional[int]:
    """Multiply-accumulates of one image through the ONNX ``model``, or None where its shapes cannot be inferred.

    >>> count_macs("model.onnx")  # doctest: +SKIP
    """
    return count_graph(model, input_size).macs


def _model(model):
    """A ModelProto from a path (without its external weights: only their shapes are read) or a ModelProto."""
    if isinstance(model, (str, Path)):
        import onnx

        return onnx.load(str(model), load_external_data=False)
    return model


def _constants(graph) -> Dict[str, Tuple[str, int]]:
    """name -> (numpy dtype name, elements) of every initializer and Constant node output."""
    import onnx

    def described(tensor) -> Tuple[str, int]:
        elements = 1
        for dim in tensor.dims:
            elements *= int(dim)
        return onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name, elements

    constants = {t.name: described(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    constants[node.output[0]] = described(attribute.t)
    return constants


def _count_source(name: str, constants, producer, counted: Dict[str, int], minimum: int,
                  integer: bool = False) -> None:
    """Count the constant ``name`` comes from, once, if it is a learned tensor of at least ``minimum`` elements.

    The walk passes DequantizeLinear (a Q/DQ model's INT8 weight, which counts; its
    scale and zero point are other inputs and are never reached), QuantizeLinear (a
    float weight fake-quantised in the graph) and layout ops (Transpose, Reshape...).
    Integer tensors count only when a DequantizeLinear makes them weights, or when
    the node computes on integers itself (``integer``): an int64 tensor is a shape,
    an axis or an index, never a weight.
    """
    dequantized = integer
    for _ in range(16):  # a chain is a few nodes long; the bound keeps a malformed cycle from looping
        if name in constants:
            break
        node = producer.get(name)
        if node is None or node.op_type not in PASS_THROUGH or not node.input:
            return
        dequantized = dequantized or node.op_type == "DequantizeLinear"
        name = node.input[0]
    else:
        return
    dtype, elements = constants[name]
    if name in counted or elements < minimum:
        return
    if dtype in _FLOAT_TYPES or dequantized:
        counted[name] = elements


def _fixed(model, input_size: Optional[Sequence[int]]):
    """A copy of ``model``'s graph for shape inference: batch 1, ``input_size`` where the spatial size is dynamic,
    and no weight data (shapes come from the initializers' dims; small tensors keep their values, which shape
    inference reads for Reshape and Resize). Returns (copy, batch the graph is fixed to, (height, width) or None)."""
    import onnx

    kept = []
    for tensor in model.graph.initializer:
        if _elements(tensor.dims) <= 64 and tensor.data_location != onnx.TensorProto.EXTERNAL:
            kept.append(tensor)
        else:  # a weight's value changes no shape: leave it out (no copy of the weights; nor a 2 GB limit)
            kept.append(onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims))
    graph = model.graph
    copy = onnx.helper.make_model(
        onnx.helper.make_graph(graph.node, graph.name, graph.input, graph.output, initializer=kept,
                               value_info=graph.value_info),
        opset_imports=model.opset_import, ir_version=model.ir_version, functions=model.functions)
    initializers = {t.name for t in model.graph.initializer}
    images = [i for i in copy.graph.input if i.name not in initializers]
    batch, size = 1, None
    if images:
        dims = images[0].type.tensor_type.shape.dim
        if len(dims) >= 1:
            if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                batch = dims[0].dim_value
            else:
                dims[0].Clear()
                dims[0].dim_value = 1
        if len(dims) == 4:
            for axis, wanted in zip((2, 3), input_size or (None, None)):
                if not (dims[axis].HasField("dim_value") and dims[axis].dim_value > 0) and wanted:
                    dims[axis].Clear()
                    dims[axis].dim_value = int(wanted)
            if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[2:]):
                size = (dims[2].dim_value, dims[3].dim_value)
    return copy, batch, size


def _elements(dims) -> int:
    elements = 1
    for dim in dims:
        elements *= int(dim)
    return elements


def _shapes(model) -> Dict[str, Optional[List[int]]]:
    """Every tensor's static shape after shape inference, None where a dimension stays unknown."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # shape inference refuses some graphs outright (custom ops in strict places): nothing sized
        inferred = model
    shapes: Dict[str, Optional[List[int]]] = {}
    graph = inferred.graph
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]
        shapes[value.name] = None if None in dims else dims
    for tensor in graph.initializer:
        shapes[tensor.name] = [int(d) for d in tensor.dims]
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    shapes[node.output[0]] = [int(d) for d in attribute.t.dims]
    return shapes


def _count_macs(model, input_size, path: Optional[Path] = None
                ) -> Tuple[Optional[int], Optional[Tuple[int, int]], Tuple[str, ...]]:
    """(MACs of one image or None, the (height, width) they are for, nodes left unsized).

    Shapes come from ``onnx.shape_inference``; where it leaves a counted node unsized
    (a Slice whose bounds are computed from other shapes, a custom op before it), the
    graph is run once on a zero image with ONNX Runtime and the shapes are read off the
    real tensors, as the PyTorch counter reads them off its forward pass.
    """
    fixed, batch, size = _fixed(model, input_size)
    shapes = _shapes(fixed)
    constants = _constants(model.graph)
    producer = {out: node for node in model.graph.node for out in node.output}
    counted = [n for n in model.graph.node if n.op_type in CONV_OPS or n.op_type in MATMUL_OPS
               or n.op_type in ("ConvTranspose", "Gemm", "FusedGemm")]
    unsized = [n for n in counted if _macs_of(n, shapes, constants, producer) is None]
    if unsized and size is not None:
        shapes.update(_shapes_by_running(model, path, fixed, unsized))
    total, left = 0, []
    for node in counted:
        macs = _macs_of(node, shapes, constants, producer)
        if macs is None:
            left.append(node.name or node.op_type)
        else:
            total += macs
    if left:
        return None, size, tuple(left)
    return total // batch, size, ()


def _shapes_by_running(model, path: Optional[Path], fixed, nodes) -> Dict[str, List[int]]:
    """The shapes of ``nodes``' inputs and outputs seen when ONNX Runtime runs ``model`` on one zero image;
    nothing where it cannot (no ONNX Runtime, weights not at hand, a graph it refuses)."""
    import numpy as np
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        if path is None:
            return {}
        model = onnx.load(str(path))  # the weights this time: ONNX Runtime computes with them
    wanted = {name for node in nodes for name in list(node.input) + list(node.output[:1]) if name}
    initializers = {t.name for t in model.graph.initializer}
    image = [i for i in fixed.graph.input if i.name not in initializers]
    if len(image) != 1:
        return {}
    run = onnx.ModelProto()
    run.CopyFrom(model)
    for graph_input in run.graph.input:
        if graph_input.name == image[0].name:
            graph_input.type.CopyFrom(image[0].type)
    known = {o.name for o in run.graph.output}
    for name in sorted(wanted - known - initializers):
        run.graph.output.add().name = name  # no type: ONNX Runtime reports what it computed
    dims = [d.dim_value for d in image[0].type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(image[0].type.tensor_type.elem_type)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor's name
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(run.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {image[0].name: np.zeros(dims, dtype=dtype)})
    except Exception:  # a graph ONNX Runtime cannot run (custom ops, over 2 GB): its MACs stay unknown
        return {}
    return {name: list(value.shape) for name, value in zip(names, values) if name in wanted}


def _macs_of(node, shapes, constants, producer) -> Optional[int]:
    """MACs of one node over the whole batch, as ``edgeseg.arch.profile.count_macs`` counts its PyTorch layer."""
    def shape(slot: int) -> Optional[List[int]]:
        return shapes.get(node.input[slot]) if slot < len(node.input) and node.input[slot] else None

    out = shapes.get(node.output[0]) if node.output else None
    op = node.op_type
    if op in CONV_OPS:  # output elements x (Cin / groups) x kh x kw: the weight's dims after the first
        weight = shape(CONV_OPS[op])
        return None if out is None or weight is None else _elements(out) * _elements(weight[1:])
    if op == "ConvTranspose":  # input elements x (Cout / groups) x kh x kw, as nn.ConvTranspose2d is counted
        image, weight = shape(0), shape(1)
        return None if image is None or weight is None else _elements(image) * _elements(weight[1:])
    if op in ("Gemm", "FusedGemm"):  # output elements x K, K from A (transposed or not)
        a = shape(0)
        if out is None or a is None or len(a) != 2:
            return None
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        return _elements(out) * a[0 if trans_a else 1]
    # MatMul: a linear layer when one operand is a weight; two activations (attention) are not counted
    slots = (0, 3) if op == "QLinearMatMul" else (0, 1)
    if not any(_weight_source(node.input[s], constants, producer, op in INTEGER_OPS)
               for s in slots if s < len(node.input)):
        return 0
    a = shape(slots[0])
    if out is None or a is None or not a:
        return None
    return _elements(out) * a[-1]


def _weight_source(name: str, constants, producer, integer: bool) -> bool:
    """Whether ``name`` is a learned constant, maybe through dequantisation and layout ops."""
    counted: Dict[str, int] = {}
    _count_source(name, constants, producer, counted, minimum=1, integer=integer)
    return bool(counted)


def model_size(meta: dict, path: Union[str, Path], input_size: Optional[Sequence[int]] = None) -> dict:
    """``{"params", "macs"}`` as the sidecar ``meta`` records them; for an ONNX whose sidecar does not (a graph
    another tool exported, an export of a checkpoint made elsewhere), counted from its graph, with
    ``"counted": "onnx graph"``. An engine holds no graph to count: what its sidecar does not say stays None.

    >>> model_size({}, "foreign.onnx", (520, 520))  # doctest: +SKIP
    {'params': 3218714, 'macs': 2085349200, 'counted': 'onnx graph'}
    """
    model = meta.get("model") or {}
    recorded = {"params": model.get("params"), "macs": model.get("macs")}
    if None not in recorded.values() or Path(path).suffix.lower() != ".onnx" or not Path(path).is_file():
        return recorded
    counted = count_graph(path, input_size)
    return {"params": counted.params if recorded["params"] is None else recorded["params"],
            "macs": counted.macs if recorded["macs"] is None else recorded["macs"], "counted": COUNTED}
