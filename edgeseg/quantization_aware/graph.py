"""An ONNX graph run as a torch module, so that QAT trains exactly the graph calibrate quantises.

QAT must put fake quantisation on the tensors calibrate's Q/DQ model quantises, and
calibrate knows them by their ONNX names, after the exporter has folded every BatchNorm
into its convolution with frozen statistics (what TensorRT does at build time too). Running
that FP32 ONNX graph in torch, node by node, gives both at once: the same tensors by the
same names, BatchNorm already folded, and weights that are torch parameters. Mapping
ONNX names back onto an arbitrary nn.Module's attributes would be guesswork per exporter
release.

The ops are those torch.onnx writes for the architectures edgeseg builds or takes in
(torchvision, smp, SegFormer, user modules of the same layers); an op outside the list is
refused in one sentence before training starts.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgeseg.errors import ConfigError

# the inputs of these ops that are learned weights (the rest of the float initializers stay constants)
WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1), "PRelu": (1,),
                 "LayerNormalization": (1, 2)}
EdgeFn = Callable[[str, int, str, torch.Tensor], torch.Tensor]


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ints(value) -> List[int]:
    return [int(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value)]


def _padding(x: torch.Tensor, pads: Sequence[int], value: float = 0.0) -> Tuple[torch.Tensor, List[int]]:
    """ONNX pads [top, left, bottom, right]: symmetric ones go to the op, asymmetric ones are applied here."""
    half = len(pads) // 2
    begin, end = list(pads[:half]), list(pads[half:])
    if begin == end:
        return x, begin
    flat = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return F.pad(x, flat, value=value), [0] * half


def _conv(x, w, b=None, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, **_):
    x, padding = _padding(x, pads)
    return F.conv2d(x, w, b, stride=list(strides), padding=padding, dilation=list(dilations), groups=group)


def _conv_transpose(x, w, b=None, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
                    output_padding=(0, 0), **attrs):
    if "output_shape" in attrs or list(pads[:2]) != list(pads[2:]):
        raise ConfigError("QAT does not run a ConvTranspose with output_shape or asymmetric pads; export the model "
                          "with symmetric padding.")
    return F.conv_transpose2d(x, w, b, stride=list(strides), padding=list(pads[:2]),
                              output_padding=list(output_padding), groups=group, dilation=list(dilations))


def _pool(kind):
    def run(x, *, kernel_shape, strides=None, pads=(0, 0, 0, 0), ceil_mode=0, count_include_pad=0,
            dilations=(1, 1), **_):
        strides = list(strides or [1] * len(kernel_shape))
        if kind == "max":
            x, padding = _padding(x, pads, value=float("-inf"))
            return F.max_pool2d(x, list(kernel_shape), strides, padding, list(dilations), bool(ceil_mode))
        if list(pads[:2]) != list(pads[2:]):
            raise ConfigError("QAT does not run an AveragePool with asymmetric pads.")
        return F.avg_pool2d(x, list(kernel_shape), strides, list(pads[:2]), bool(ceil_mode), bool(count_include_pad))
    return run


def _resize(x, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
            nearest_mode="round_prefer_floor", **_):
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = coordinate_transformation_mode
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    nearest = nearest_mode.decode() if isinstance(nearest_mode, bytes) else nearest_mode
    if sizes is not None and sizes.numel():
        size = _ints(sizes)[2:]
    else:
        size = [int(np.floor(d * float(s))) for d, s in zip(x.shape[2:], scales.tolist()[2:])]
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=ctm == "align_corners")
    if mode == "cubic" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return F.interpolate(x, size=size, mode="bicubic", align_corners=ctm == "align_corners")
    if mode == "nearest" and ctm == "asymmetric" and nearest == "floor":
        return F.interpolate(x, size=size, mode="nearest")
    raise ConfigError(f"QAT does not run Resize mode={mode}, coordinate_transformation_mode={ctm}, "
                      f"nearest_mode={nearest}.")


def _slice(x, starts, ends, axes=None, steps=None, **_):
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(axes)
    index = [slice(None)] * x.dim()
    for axis, start, end, step in zip(axes, _ints(starts), _ints(ends), steps):
        if step < 0:
            raise ConfigError("QAT does not run a Slice with a negative step.")
        size = x.shape[axis]
        start = max(0, min(size, start + size if start < 0 else start))
        end = max(0, min(size, end + size if end < 0 else end))
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _reshape(x, shape, *, allowzero=0, **_):
    target = _ints(shape)
    target = [x.shape[i] if v == 0 and not allowzero else v for i, v in enumerate(target)]
    return x.reshape(target)


def _unsqueeze(x, axes=None, **attrs):
    axes = sorted(_ints(axes if axes is not None else attrs["axes"]))
    for axis in axes:
        x = x.unsqueeze(axis if axis >= 0 else axis + x.dim() + 1)
    return x


def _squeeze(x, axes=None, **attrs):
    axes = axes if axes is not None else attrs.get("axes")
    if axes is None:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in _ints(axes)), reverse=True):
        x = x.squeeze(axis)
    return x


def _reduce_mean(x, axes=None, *, keepdims=1, **attrs):
    axes = axes if axes is not None else attrs.get("axes")
    dims = _ints(axes) if axes is not None else list(range(x.dim()))
    return x.mean(dim=dims, keepdim=bool(keepdims))


def _split(x, split=None, *, axis=0, num_outputs=None, outputs=1, **attrs):
    sizes = _ints(split) if split is not None else attrs.get("split")
    if sizes is None:
        parts = num_outputs or outputs
        sizes = [-(-x.shape[axis] // parts)] * parts
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    return tuple(torch.split(x, list(sizes), dim=axis))


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, **_):
    out = alpha * (a.t() if transA else a) @ (b.t() if transB else b)
    return out + beta * c if c is not None else out


def _layer_norm(x, scale, bias=None, *, axis=-1, epsilon=1e-5, **_):
    axis = axis % x.dim()
    return F.layer_norm(x, list(x.shape[axis:]), scale, bias, epsilon)


def _batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)


def _clip(x, low=None, high=None, **attrs):
    low = low if low is not None else attrs.get("min")
    high = high if high is not None else attrs.get("max")
    return torch.clamp(x, min=low, max=high)


def _cast(x, *, to, **_):
    import onnx

    dtype = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.INT64: torch.int64,
             onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.BOOL: torch.bool,
             onnx.TensorProto.FLOAT16: torch.float32}.get(to)  # float16 casts train in float32
    if dtype is None:
        raise ConfigError(f"QAT does not run a Cast to ONNX type {to}.")
    return x.to(dtype)


def _pad(x, pads, value=None, axes=None, *, mode="constant", **_):
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _ints(pads)
    half = len(pads) // 2
    flat = []
    for b, e in zip(reversed(pads[:half]), reversed(pads[half:])):
        flat += [b, e]
    if mode == "constant":
        return F.pad(x, flat, value=float(value) if value is not None and value.numel() else 0.0)
    return F.pad(x, flat[: 2 * (x.dim() - 2)], mode={"reflect": "reflect", "edge": "replicate"}[mode])


OPS: Dict[str, Callable] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose,
    "Relu": lambda x, **_: F.relu(x), "Sigmoid": lambda x, **_: torch.sigmoid(x),
    "Tanh": lambda x, **_: torch.tanh(x), "Erf": lambda x, **_: torch.erf(x), "Sqrt": lambda x, **_: torch.sqrt(x),
    "Exp": lambda x, **_: torch.exp(x), "Neg": lambda x, **_: -x, "Abs": lambda x, **_: x.abs(),
    "Floor": lambda x, **_: torch.floor(x), "Ceil": lambda x, **_: torch.ceil(x), "Identity": lambda x, **_: x,
    "HardSwish": lambda x, **_: F.hardswish(x),
    "HardSigmoid": lambda x, *, alpha=0.2, beta=0.5, **_: torch.clamp(alpha * x + beta, 0.0, 1.0),
    "LeakyRelu": lambda x, *, alpha=0.01, **_: F.leaky_relu(x, alpha),
    "PRelu": lambda x, slope, **_: torch.where(x >= 0, x, x * slope),
    "Clip": _clip,
    "Add": lambda a, b, **_: a + b, "Sub": lambda a, b, **_: a - b, "Mul": lambda a, b, **_: a * b,
    "Div": lambda a, b, **_: torch.div(a, b, rounding_mode="trunc") if not a.is_floating_point() else a / b,
    "Pow": lambda a, b, **_: torch.pow(a, b),
    "MatMul": lambda a, b, **_: a @ b, "Gemm": _gemm,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda x, **_: x.mean(dim=list(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x, **_: x.amax(dim=list(range(2, x.dim())), keepdim=True),
    "ReduceMean": _reduce_mean, "Softmax": lambda x, *, axis=-1, **_: torch.softmax(x, dim=axis),
    "Concat": lambda *xs, axis, **_: torch.cat(xs, dim=axis),
    "Shape": lambda x, *, start=0, end=None, **_: torch.tensor(list(x.shape)[start:end], dtype=torch.int64,
                                                               device=x.device),
    "Gather": lambda x, i, *, axis=0, **_: torch.index_select(x, axis, i.reshape(-1).long() % x.shape[axis])
    .reshape(list(x.shape[:axis]) + list(i.shape) + list(x.shape[axis + 1:])),
    "Slice": _slice, "Reshape": _reshape, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Transpose": lambda x, *, perm=None, **_: x.permute(*(perm or reversed(range(x.dim())))),
    "Flatten": lambda x, *, axis=1, **_: x.reshape(int(np.prod(x.shape[:axis])), -1),
    "Expand": lambda x, shape, **_: x * torch.ones(_ints(shape), dtype=x.dtype, device=x.device),
    "Split": _split, "Resize": _resize, "Pad": _pad, "Cast": _cast,
    "LayerNormalization": _layer_norm, "BatchNormalization": _batch_norm,
    "Range": lambda a, b, d, **_: torch.arange(a.item(), b.item(), d.item(), dtype=a.dtype, device=a.device),
    "ConstantOfShape": lambda s, *, value=None, **_: torch.full(
        _ints(s), float(np.asarray(value.float_data or [0])[0]) if value is not None else 0.0, device=s.device),
    "Equal": lambda a, b, **_: a == b, "Where": lambda c, a, b, **_: torch.where(c, a, b),
}


def check_supported(model) -> None:
    """Refuse, in one sentence, a graph with an op QAT cannot run."""
    missing = sorted({n.op_type for n in model.graph.node} - set(OPS) - {"Constant"})
    if missing:
        raise ConfigError(f"QAT cannot train this model's ONNX graph: it has {', '.join(missing)}, which edgeseg's "
                          f"graph runner does not implement; calibrate it after training instead (edgeseg calibrate).")


def _constant(node) -> torch.Tensor:
    from onnx import numpy_helper

    attrs = {a.name: a for a in node.attribute}
    if "value" in attrs:
        return torch.from_numpy(numpy_helper.to_array(attrs["value"].t).copy())
    if "value_float" in attrs:
        return torch.tensor(attrs["value_float"].f)
    if "value_int" in attrs:
        return torch.tensor(attrs["value_int"].i)
    if "value_ints" in attrs:
        return torch.tensor(list(attrs["value_ints"].ints))
    raise ConfigError(f"QAT does not run the Constant {node.name} (an unusual value attribute).")


class OnnxGraph(nn.Module):
    """Runs an ONNX model's graph with torch ops; the weights of its convolutions and matmuls are parameters.

    ``edge(node, input index, tensor name, value)`` may replace any value a node reads: that
    is where QAT puts its fake quantisation. The node names are those calibrate's writer
    gives (quant.qdq.ensure_node_names), so a node is the same node in both.
    """

    def __init__(self, model, trainable: bool = True):
        super().__init__()
        from onnx import numpy_helper

        from edgeseg.quant.qdq import ensure_node_names

        check_supported(model)
        ensure_node_names(model)
        self.nodes = [(n.name, n.op_type, list(n.input), list(n.output), _attrs(n)) for n in model.graph.node]
        initializers = {i.name: i for i in model.graph.initializer}
        self.input_name = next(i.name for i in model.graph.input if i.name not in initializers)
        self.output_names = [o.name for o in model.graph.output]
        learned = {name for _, op, inputs, _, _ in self.nodes for index, name in enumerate(inputs)
                   if index in WEIGHT_INPUTS.get(op, ()) and name in initializers}
        self.weights = nn.ParameterList()
        self.constants_list: List[str] = []
        self.slot: Dict[str, Tuple[str, int]] = {}  # initializer -> ("w", index) | ("c", index)
        for index, (name, init) in enumerate(initializers.items()):
            value = torch.from_numpy(numpy_helper.to_array(init).copy())
            if name in learned and value.is_floating_point():
                self.slot[name] = ("w", len(self.weights))
                self.weights.append(nn.Parameter(value.float(), requires_grad=trainable))
            else:
                self.slot[name] = ("c", len(self.constants_list))
                self.register_buffer(f"c{len(self.constants_list)}", value, persistent=False)
                self.constants_list.append(name)
        for name, op, _inputs, outputs, attrs in self.nodes:  # Constant nodes: buffers too, so they move with .to()
            if op == "Constant":
                node = model.graph.node[[n.name for n in model.graph.node].index(name)]
                self.slot[outputs[0]] = ("c", len(self.constants_list))
                self.register_buffer(f"c{len(self.constants_list)}", _constant(node), persistent=False)
                self.constants_list.append(outputs[0])
        self.nodes = [n for n in self.nodes if n[1] != "Constant"]
        self.edge: Optional[EdgeFn] = None

    def initializer(self, name: str) -> torch.Tensor:
        kind, index = self.slot[name]
        return self.weights[index] if kind == "w" else getattr(self, f"c{index}")

    def learned_weights(self) -> Dict[str, torch.Tensor]:
        """{initializer name: trained value} of every learned weight."""
        return {name: self.weights[index].detach() for name, (kind, index) in self.slot.items() if kind == "w"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: Dict[str, torch.Tensor] = {self.input_name: x}
        for name, op, inputs, outputs, attrs in self.nodes:
            args = []
            for index, tensor in enumerate(inputs):
                if not tensor:
                    args.append(None)
                    continue
                value = values[tensor] if tensor in values else self.initializer(tensor)
                if self.edge is not None:
                    value = self.edge(name, index, tensor, value)
                args.append(value)
            while args and args[-1] is None:
                args.pop()
            if op == "Split":
                attrs = dict(attrs, outputs=len(outputs))
            result = OPS[op](*args, **attrs)
            if isinstance(result, tuple):
                values.update(zip(outputs, result))
            else:
                values[outputs[0]] = result
        return values[self.output_names[0]]

