"""The TensorRT rules check: will this ONNX parse on the TensorRT it is meant for?

Why: what TensorRT's ONNX parser refuses fails only on the device, late and tersely
("only activation types allowed as input to this layer" for calibrate's old INT32 conv
biases feeding DequantizeLinear: onnxruntime#14229, TensorRT#3360, onnx-tensorrt#850).
This check runs anywhere (no TensorRT, no torch) and names the node, the tensor and the
fix. Every ONNX edgeseg hands to TensorRT passes it for each TensorRT in ``ALL_TARGETS``.

Rules and sources:

- operators, their types and the opset range: that TensorRT's onnx-tensorrt
  docs/operators.md (``trt_operators``); Cast's listed types bound its target type too,
  so a uint8 class map (``export --argmax``) is refused on 8.5, whose Cast lists no UINT8;
- Q/DQ: NvInfer.h's IQuantizeLayer/IDequantizeLayer (NVIDIA/TensorRT release/8.5, 10.3,
  11.1) and the parser's QuantDequantLinearHelper (onnx-tensorrt 8.5-GA, 10.1-GA):
  DequantizeLinear reads INT8 (8.5) or INT8/FP8/INT4 (10.x; FP4 too on 11.1); zero points
  are present (8.5), 0 and of that type; scales are positive; a per-channel scale is 1-D,
  one value per channel of an axis that lies in the input's rank.

Not covered: the "Restrictions" column (Resize modes, constant ``axes``, ...) and tensor
types inside If/Loop bodies (their operators are checked).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from edgeseg.engine.trt_operators import TABLES, OperatorTable
from edgeseg.errors import ConfigError, EdgesegError

# JetPack 5, JetPack 6, the newest TensorRT whose operators.md is copied
ALL_TARGETS = ("8.5.2", "10.3.0", "11.1.0")
_TYPED_BY_OUTPUT = ("Constant", "ConstantOfShape")  # their listed type is the value they make, not an input's
_RECALIBRATE = "recalibrate with edgeseg calibrate, which writes symmetric INT8 Q/DQ with float biases"
# operators an older opset writes as basic ones that every targeted TensorRT parses (torch.onnx.export)
_DECOMPOSED_BEFORE = {
    "LayerNormalization": "re-export it with edgeseg export --opset 16, which writes LayerNormalization as "
                          "ReduceMean, Sub, Pow, Sqrt and Div (LayerNormalization became an ONNX operator in opset 17)"}
_SYMMETRIC = "recalibrate with edgeseg calibrate without --asymmetric (TensorRT takes symmetric INT8 only)"


class TensorRTRulesError(EdgesegError):
    """An ONNX model breaks a rule of the TensorRT ONNX parser it is meant for."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: what is wrong (naming node and tensor) and what to do about it."""

    text: str
    fix: str


def table_for(trt_version: str) -> OperatorTable:
    """The table of the newest documented TensorRT at or below ``trt_version`` ("8.5.2", "10.3.0", "11.1").

    Older is the safe direction: a later release only adds operators, types and opsets.
    """
    try:
        wanted = tuple(int(p) for p in (trt_version.strip().split(".") + ["0"])[:2])
    except ValueError:
        raise ConfigError(f"TensorRT version '{trt_version}' is not MAJOR.MINOR[.PATCH]; give one like 10.3.0.") \
            from None
    known = sorted((tuple(int(p) for p in key.split(".")), table) for key, table in TABLES.items())
    below = [table for key, table in known if key <= wanted]
    if not below:
        raise ConfigError(f"TensorRT {trt_version} is older than {known[0][1].version}, the oldest TensorRT edgeseg "
                          f"targets; use TensorRT 8.5 (JetPack 5) or newer.")
    return below[-1]


def check_for_tensorrt(model_or_path, trt_version: str) -> List[str]:
    """Every rule of TensorRT ``trt_version``'s ONNX parser the model breaks, in words; empty when it passes.

    >>> check_for_tensorrt("model.int8.onnx", "8.5.2")  # doctest: +SKIP
    []
    """
    return [v.text for v in violations(model_or_path, trt_version)]


def require_tensorrt_parsable(path: Union[str, os.PathLike], trt_version: str) -> None:
    """Raise TensorRTRulesError, naming the first problems and the fix, unless ``path`` passes the check.

    >>> require_tensorrt_parsable("model.int8.onnx", "10.3.0")  # doctest: +SKIP
    """
    found = violations(path, trt_version)
    if found:
        more = f" (and {len(found) - 2} more)" if len(found) > 2 else ""
        raise TensorRTRulesError(f"{Path(path).name} will not parse on TensorRT {trt_version}: "
                                 f"{'; '.join(v.text for v in found[:2])}{more}; {found[0].fix}.")


def violations(model_or_path, trt_version: str) -> List[Violation]:
    """The rules ``model_or_path`` (an onnx ModelProto or a file) breaks on TensorRT ``trt_version``."""
    table = table_for(trt_version)
    model = _load(model_or_path)
    found = list(_opset_violations(model, table))
    facts = _Facts(model)
    for node in _nodes(model.graph):
        found.extend(_node_violations(node, table, facts))
    return found


def _load(model_or_path):
    if not isinstance(model_or_path, (str, os.PathLike)):
        return model_or_path
    import onnx

    from edgeseg.fileio import require_onnx_model

    return onnx.load(str(require_onnx_model(model_or_path)))


def _nodes(graph) -> Iterator:
    """The graph's nodes and those of its If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for body in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _nodes(body)


def _opset_violations(model, table: OperatorTable) -> Iterator[Violation]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    low, high = table.min_opset or 1, table.max_opset
    if opset is None or not low <= opset <= high:
        takes = f"{low} to {high}" if table.min_opset else f"up to {high}"
        yield Violation(f"the model's ONNX opset is {opset}, but TensorRT {table.version}'s parser takes opsets "
                        f"{takes}", "re-export with an opset it takes (edgeseg export --opset 17)")


class _Facts:
    """Types, shapes and constant values of the model's tensors: initializers first, then shape inference."""

    def __init__(self, model):
        from onnx import shape_inference

        try:
            graph = shape_inference.infer_shapes(model).graph
        except Exception:  # a graph ONNX cannot infer still gets its operator and initializer checks
            graph = model.graph
        self.types: Dict[str, int] = {}
        self.shapes: Dict[str, Tuple[Optional[int], ...]] = {}
        for info in list(graph.input) + list(graph.value_info) + list(graph.output):
            tensor = info.type.tensor_type
            if tensor.elem_type:
                self.types[info.name] = tensor.elem_type
            if tensor.HasField("shape"):
                self.shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                               for d in tensor.shape.dim)
        self._constants = {t.name: t for t in model.graph.initializer}
        self._constants.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant"
                                for a in n.attribute if a.name == "value"})
        for name, tensor in self._constants.items():
            self.types[name], self.shapes[name] = tensor.data_type, tuple(tensor.dims)

    def value(self, name: str):
        """The tensor's values (numpy), when it is an initializer or a Constant's output; else None."""
        from onnx import numpy_helper

        return numpy_helper.to_array(self._constants[name]) if name in self._constants else None

    def type_name(self, name: str, table: OperatorTable) -> Optional[str]:
        """The operators.md name of the tensor's type ("FP32", "INT8", ...) as ``table``'s parser reads it."""
        return None if name not in self.types else _doc_type(self.types[name], table)


def _doc_type(elem_type: int, table: OperatorTable) -> str:
    """An ONNX element type in operators.md's words, after the parser's cast-downs (INT64 -> INT32 on 8.5)."""
    from onnx import TensorProto, helper

    names = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
             TensorProto.FLOAT8E4M3FN: "FP8", getattr(TensorProto, "FLOAT4E2M1", -1): "FP4"}
    name = names.get(elem_type) or helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", "")
    return table.cast_down.get(name, name)


def _node_violations(node, table: OperatorTable, facts: _Facts) -> Iterator[Violation]:
    where, version = f"{node.op_type} '{node.name or node.output[0]}'", table.version
    if node.domain not in ("", "ai.onnx"):
        yield Violation(f"{where} is a {node.domain} operator, which TensorRT {version} parses only as a plugin",
                        "export it with standard ONNX operators only")
        return
    supported = table.types(node.op_type)
    if supported is None:
        yield Violation(f"{where}: TensorRT {version}'s parser does not support {node.op_type}",
                        _DECOMPOSED_BEFORE.get(node.op_type, f"export without {node.op_type} or target a newer "
                                                             f"TensorRT"))
        return
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        yield from _qdq_violations(node, where, table, facts)
        if node.op_type == "DequantizeLinear":
            return  # its input type is a Q/DQ rule, with its own message
    typed = node.output[0] if node.op_type in _TYPED_BY_OUTPUT or not node.input else node.input[0]
    got = facts.type_name(typed, table)
    if got is not None and got not in supported:
        yield Violation(f"{where} works on {got} tensor '{typed}', but TensorRT {version}'s {node.op_type} takes "
                        f"{', '.join(supported)}", f"export {node.op_type} on {supported[0]} tensors")
    if node.op_type == "Cast":
        to = _doc_type(next(a.i for a in node.attribute if a.name == "to"), table)
        if to not in supported:
            yield Violation(f"{where} casts to {to}, which TensorRT {version}'s Cast cannot make (it makes "
                            f"{', '.join(supported)})", f"export without the {to} cast"
                            + (" (edgeseg export --argmax --argmax-dtype int32)" if to == "UINT8" else ""))


def _qdq_violations(node, where: str, table: OperatorTable, facts: _Facts) -> Iterator[Violation]:
    version, quantized = table.version, table.types("DequantizeLinear")
    is_dq, data = node.op_type == "DequantizeLinear", node.input[0]
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
    data_type = facts.type_name(data, table)
    if is_dq and data_type is not None and data_type not in quantized:
        why = {"INT32": " (a bias quantized to INT32, as ONNX Runtime's QuantizeBias writes it, where TensorRT "
                        "wants a float bias to fuse into the INT8 convolution)",
               "UINT8": " (ONNX Runtime's asymmetric layout)"}.get(data_type, "")
        yield Violation(f"{where} reads {data_type} tensor '{data}'{why}, but TensorRT {version} dequantizes only "
                        f"{', '.join(quantized)}", _SYMMETRIC if data_type == "UINT8" else _RECALIBRATE)
        return  # its zero point follows its input: one fix for both
    if zero_point is None:
        if version == "8.5":  # QuantDequantLinearHelper of onnx-tensorrt 8.5-GA asserts inputs.size() == 3
            yield Violation(f"{where} has no zero point, which TensorRT 8.5's parser requires", _RECALIBRATE)
    else:
        zp_type = facts.type_name(zero_point, table)
        wanted = [data_type] if is_dq and data_type is not None else list(quantized)  # NvInfer: same type as input
        if zp_type is not None and zp_type not in wanted:
            asymmetric = " (ONNX Runtime's asymmetric layout)" if zp_type == "UINT8" else ""
            yield Violation(f"{where} has zero point '{zero_point}' of type {zp_type}{asymmetric}, but TensorRT "
                            f"{version} takes {' or '.join(wanted)} zero points here", _SYMMETRIC)
        values = facts.value(zero_point)
        if values is not None and values.astype("float64").any():
            yield Violation(f"{where} has nonzero zero point '{zero_point}' (asymmetric quantization), but TensorRT "
                            f"takes symmetric quantization only (zero points of 0)", _SYMMETRIC)
    yield from _scale_violations(node, where, table, facts, zero_point)


def _scale_violations(node, where: str, table: OperatorTable, facts: _Facts,
                      zero_point: Optional[str]) -> Iterator[Violation]:
    data, scale, version = node.input[0], node.input[1], table.version
    values = facts.value(scale)
    if values is not None:
        bad = [float(v) for v in values.reshape(-1).astype("float64") if not (math.isfinite(v) and v > 0)]
        if bad or values.size == 0:
            yield Violation(f"{where} has scale '{scale}' with {len(bad) or 'no'} value(s) that are not positive and "
                            f"finite{f' (such as {bad[0]})' if bad else ''}, but TensorRT takes positive scales only",
                            _RECALIBRATE)
    scale_shape, zp_shape = facts.shapes.get(scale), facts.shapes.get(zero_point) if zero_point else None
    sizes = [_size(shape) for shape in (scale_shape, zp_shape) if shape is not None]
    if len(sizes) == 2 and None not in sizes and sizes[0] != sizes[1]:  # a symbolic length is not a mismatch
        yield Violation(f"{where} has {_size(scale_shape)} scale(s) but {_size(zp_shape)} zero point(s)",
                        _RECALIBRATE)
    rank = len(facts.shapes[data]) if data in facts.shapes else None
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    if rank is not None and axis is not None and not -rank <= axis < rank:
        yield Violation(f"{where} has axis {axis}, outside [{-rank}, {rank - 1}] for its {rank}-D input '{data}'",
                        _RECALIBRATE)
        return
    if scale_shape is None or _size(scale_shape) in (None, 1):
        return  # per-tensor (or not known here)
    if len(scale_shape) != 1:
        # NvInfer.h: 8.5 takes scalar or 1-D scales; 10.x and 11.x block scales are for INT4, FP8 and FP4 only
        if version == "8.5" or facts.type_name(data, table) == "INT8":
            yield Violation(f"{where} has a {len(scale_shape)}-D scale '{scale}', but TensorRT {version} takes a "
                            f"scalar or 1-D scale here", _RECALIBRATE)
        return  # the shapes of block scales are not checked here
    if axis is None:
        yield Violation(f"{where} has a per-channel scale '{scale}' but no axis: ONNX reads it along axis 1, "
                        f"TensorRT's parser along axis 0", _RECALIBRATE)
        return
    dims = facts.shapes.get(data)
    channels = dims[axis] if dims else None
    if channels and channels != scale_shape[0]:
        yield Violation(f"{where} has {scale_shape[0]} per-channel scales in '{scale}' but its input '{data}' has "
                        f"{channels} along axis {axis}", _RECALIBRATE)


def _size(shape: Tuple[Optional[int], ...]) -> Optional[int]:
    return None if any(d is None for d in shape) else math.prod(shape) if shape else 1
