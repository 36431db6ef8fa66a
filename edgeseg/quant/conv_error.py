"""How much INT8 changes each convolution's output, measured on calibration images.

For every Conv whose input gets Q/DQ, its FP32 input x (taken from the FP32 model) goes
through the conv twice: exactly, and with x rounded to INT8 over a candidate range and
the weights rounded per output channel. Per output channel we keep the mean difference,
the shift that bias correction removes. Each layer is measured on its FP32 input, so
layers do not compound each other's error. Q is ONNX Runtime's own scale and zero-point
arithmetic, so what is measured is what the Q/DQ model will compute.

Bias correction uses it (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019, in its empirical form, as NNCF's
FastBiasCorrection). Picking each tensor's threshold by the squared error of its convs
was tried for ``--method auto`` and lost to whole-model argmax agreement on the pruned
student of the first CamVid run (a comparison run by hand, with no committed result), so
only the mean is measured.
"""
from __future__ import annotations

from typing import Callable, Container, Dict, Iterable, List, Tuple

import numpy as np

Ranges = Dict[str, Tuple[float, float]]


def int8_per_channel(weights: np.ndarray) -> np.ndarray:
    """Weights after symmetric per-output-channel INT8 quantisation (what the Q/DQ model will compute with)."""
    flat = weights.reshape(weights.shape[0], -1)
    scale = np.abs(flat).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    quantised = np.clip(np.round(flat / scale[:, None]), -127, 127) * scale[:, None]
    return quantised.reshape(weights.shape).astype(weights.dtype)


def activation_quantizer(low: float, high: float, symmetric: bool) -> Callable[[np.ndarray], np.ndarray]:
    """A function rounding and clipping values to INT8 (UINT8 when asymmetric) over [low, high], as ONNX Runtime does."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qtype = TensorProto.INT8 if symmetric else TensorProto.UINT8
    qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=symmetric)
    zero_point, scale = compute_scale_zp(np.array(low, np.float32), np.array(high, np.float32), qmin, qmax,
                                         symmetric=symmetric)
    scale, zero_point, qmin, qmax = float(scale), float(zero_point), float(qmin), float(qmax)
    if scale == 0:
        return lambda values: values
    return lambda values: ((np.clip(np.round(values / scale) + zero_point, qmin, qmax) - zero_point) * scale
                           ).astype(np.float32)


def measurable_convs(model, tensors: Container[str], skip: Iterable[str] = ()) -> List:
    """2-D Conv nodes with constant weights whose input is one of ``tensors`` (those INT8 will touch)."""
    from onnx import numpy_helper

    skipped = set(skip)
    initializers = {init.name: init for init in model.graph.initializer}
    return [node for node in model.graph.node
            if node.op_type == "Conv" and node.name not in skipped and len(node.input) >= 2
            and node.input[1] in initializers and node.input[0] in tensors
            and numpy_helper.to_array(initializers[node.input[1]]).ndim == 4]


def _conv(inputs, weights, node):
    """ONNX Conv (2-D, explicit pads) with torch, without bias."""
    import torch.nn.functional as F

    attrs = {a.name: (list(a.ints) if a.ints else a.i) for a in node.attribute}
    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[0] != pads[2] or pads[1] != pads[3]:  # asymmetric padding: pad first, then a valid conv
        inputs = F.pad(inputs, (pads[1], pads[3], pads[0], pads[2]))
        padding = 0
    else:
        padding = (pads[0], pads[1])
    return F.conv2d(inputs, weights, stride=attrs.get("strides", 1), padding=padding,
                    dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))


def measure_shifts(model, convs: List, candidates: Dict[str, Ranges], activations: Iterable[Dict[str, np.ndarray]],
                   symmetric: bool) -> Dict[str, Dict[str, np.ndarray]]:
    """{conv name: {candidate label: per-channel mean of INT8 minus FP32 output}} over FP32 ``activations``.

    ``candidates`` maps each conv input tensor to {label: (low, high)}; ``activations``
    yields, per image, the FP32 value of each conv input tensor.
    """
    import torch
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    weights, int8_weights = {}, {}
    for node in convs:
        w = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        weights[node.name], int8_weights[node.name] = torch.from_numpy(w), torch.from_numpy(int8_per_channel(w))
    quantizers = {tensor: {label: activation_quantizer(low, high, symmetric) for label, (low, high) in options.items()}
                  for tensor, options in candidates.items()}
    sums: Dict[Tuple[str, str], np.ndarray] = {}
    counts: Dict[str, int] = {}
    with torch.no_grad():
        for values in activations:
            for node in convs:
                x = values[node.input[0]]
                exact = _conv(torch.from_numpy(x), weights[node.name], node).double()
                counts[node.name] = counts.get(node.name, 0) + exact.shape[0] * exact.shape[2] * exact.shape[3]
                for label, quantize in quantizers[node.input[0]].items():
                    difference = _conv(torch.from_numpy(quantize(x)), int8_weights[node.name], node).double() - exact
                    key = (node.name, label)
                    sums[key] = sums.get(key, 0.0) + difference.sum(dim=(0, 2, 3)).numpy()
    shifts: Dict[str, Dict[str, np.ndarray]] = {}
    for (name, label), total in sums.items():
        shifts.setdefault(name, {})[label] = total / counts[name]
    return shifts
