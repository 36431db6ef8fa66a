"""Writing the Q/DQ ONNX model from edgeseg's ranges with ONNX Runtime's quantizer.

ONNX Runtime's QDQQuantizer places QuantizeLinear/DequantizeLinear pairs; it is fed the
ranges edgeseg computed instead of running its own calibrator, so ONNX Runtime, the
TensorRT cache and any explicit-quantization build share the same numbers.

Placement: by default only the *inputs* of the quantised ops get Q/DQ, which is what
TensorRT's explicit quantization asks for (it fuses Conv+activation and takes the
output scale from the next layer's input Q) and what NNCF and ModelOpt do. Putting
Q/DQ on every conv output as well (ONNX Runtime's own default, ``quantize_outputs``)
rounds each pre-activation tensor and then its activation again: with edgeseg's default
calibration it costs 3.09 and 1.45 mIoU on the two CamVid models of
benchmarks/results/int8_accuracy.md, against +0.16 and -0.07 with inputs only. It is
kept as an option because ONNX Runtime's CPU provider needs DQ -> Conv -> Q to fuse
QLinearConv. With asymmetric activations as well, the quantizer drops each Relu/Clip that
follows a conv (its [0, max] range becomes the conv's output Q), so there is one rounding
per conv again and no Relu left: ONNX Runtime's fastest CPU layout here (the demo's,
when its engine is ONNX Runtime's). TensorRT refuses asymmetric Q/DQ.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

# Ops whose inputs get Q/DQ: the compute-heavy ones and those TensorRT fuses with them.
QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
                 "GlobalAveragePool"]
CONV_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# With asymmetric activations and output Q/DQ, ONNX Runtime's quantizer drops a Relu/Clip that follows a
# conv and quantizes the conv's output with the activation's range ([0, max] puts the zero point at the
# bottom of uint8, so the clipping is the ReLU): DQ -> Conv -> Q fuses into one QLinearConv, one rounding.
REMOVABLE_ACTIVATIONS = ["Relu", "Clip"]


def logits_nodes(model) -> List[str]:
    """Nodes from the graph output back to (and including) the last convolutions: kept in float.

    The classifier convolution, the additions and the resize that form the final logits
    decide the argmax; quantising them costs accuracy for almost no speed.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    keep: List[str] = []
    frontier = [o.name for o in model.graph.output]
    seen = set()
    while frontier:
        tensor = frontier.pop()
        node = producers.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        keep.append(node.name)
        if node.op_type not in CONV_OPS:
            frontier.extend(node.input)
    return keep


def ensure_node_names(model) -> None:
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"


def write_qdq(onnx_path: str | Path, out_path: str | Path, ranges: Dict[str, Tuple[float, float]], *,
              symmetric: bool = True, nodes_to_exclude: Iterable[str] = (),
              bias_shifts: Optional[Dict[str, np.ndarray]] = None, quantize_outputs: bool = False) -> List[str]:
    """Quantise ``onnx_path`` with per-channel symmetric INT8 weights and the given activation ranges.

    ``bias_shifts`` ({conv: shift}, from conv_error.measure_shifts) are subtracted from the biases of
    the convolutions that get INT8; those kept in float keep their own bias.
    ``quantize_outputs`` also puts Q/DQ on each quantised op's output (see the module notes).
    Returns the names of the nodes kept in float.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import save_and_reload_model_with_shape_infer

    model = onnx.load(str(onnx_path))
    ensure_node_names(model)
    excluded = list(dict.fromkeys(list(logits_nodes(model)) + list(nodes_to_exclude)))
    if bias_shifts:
        from edgeseg.quant.bias_correction import correct_biases

        kept_float = set(excluded)
        correct_biases(model, {name: shift for name, shift in bias_shifts.items() if name not in kept_float})
    model = save_and_reload_model_with_shape_infer(model)
    tensors = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array(low, dtype=np.float32), highest=np.array(high, dtype=np.float32))
        for name, (low, high) in ranges.items()})
    # QDQQuantizer is ONNX Runtime's internal class, whose positional order has changed between releases
    # (1.18 dropped `mode` and `static`): every argument goes by name. setup.cfg's floor is the oldest
    # release these names were run with (tests/oldest_onnxruntime.sh).
    quantizer = QDQQuantizer(
        model=model, per_channel=True, reduce_range=False, weight_qType=QuantType.QInt8,
        activation_qType=QuantType.QInt8 if symmetric else QuantType.QUInt8, tensors_range=tensors,
        nodes_to_quantize=[], nodes_to_exclude=excluded,
        op_types_to_quantize=QUANTIZED_OPS + (REMOVABLE_ACTIVATIONS if quantize_outputs and not symmetric else []),
        # QuantizeBias False: biases stay float initializers. ONNX Runtime's default writes each conv bias as an
        # INT32 tensor feeding a DequantizeLinear, which TensorRT's parser refuses (its IDequantizeLayer takes
        # INT8, FP8 or INT4 only: "only activation types allowed as input to this layer"); TensorRT fuses a float
        # bias into the INT8 conv itself, as NVIDIA ModelOpt's ONNX quantizer leaves it.
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "ForceQuantizeNoInputCheck": True,
                       "QuantizeBias": False,
                       **({} if quantize_outputs else {"OpTypesToExcludeOutputQuantization": QUANTIZED_OPS})})
    quantizer.quantize_model()
    if not quantize_outputs:
        read_residual_branches_in_float(quantizer.model.model)
    quantizer.model.save_model_to_file(str(out_path))
    return excluded


def read_residual_branches_in_float(model) -> List[str]:
    """Each residual Add reads its conv branch in float and keeps Q/DQ on the skip input only.

    TensorRT fuses a residual Add into the convolution that computes one of its inputs
    (the add becomes the conv's epilogue, reading the other input in INT8); a Q/DQ pair
    between that conv and the Add separates them (TensorRT's Q/DQ placement guide) and
    rounds the conv's output once more. NVIDIA ModelOpt's ONNX quantizer places it this way
    (benchmarks/results/modelopt-layout.md: no accuracy cost on CamVid). Where both inputs
    come from convs, the later one is the branch (the skip's conv ran first). Returns the
    names of the Adds rewired.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    order = {id(node): index for index, node in enumerate(graph.node)}

    def conv_behind(tensor: str):
        """The Conv whose output reaches ``tensor`` through one Q -> DQ pair, or None."""
        dq = producer.get(tensor)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        source = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        return (source, q.input[0]) if source is not None and source.op_type in ("Conv", "ConvTranspose") else None

    rewired = []
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        branches = [(index, conv_behind(name)) for index, name in enumerate(node.input)]
        branches = [(index, found) for index, found in branches if found is not None]
        if not branches:
            continue
        index, (conv, float_tensor) = max(branches, key=lambda item: order[id(item[1][0])])
        node.input[index] = float_tensor
        rewired.append(node.name)
    _drop_unread(graph)
    return rewired


def _drop_unread(graph) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads any more, and the scales and zero points only they read."""
    freed = set()
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        unread = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                  and not any(out in read for out in n.output)]
        if not unread:
            break
        for node in unread:
            freed.update(node.input)
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for initializer in [t for t in graph.initializer if t.name in freed and t.name not in read]:
        graph.initializer.remove(initializer)
