"""Where calibrate's Q/DQ model quantises, read back from a Q/DQ model its writer wrote.

QAT does not decide placement: it asks calibrate's writer (quant/qdq.write_qdq, with its
logits-in-float rule, residual branches read in float, ``--quantize-outputs`` and the
layers kept in float) to write the Q/DQ model once with calibrate's ranges, then reads
which input of which node reads a DequantizeLinear. So the tensors QAT fake-quantises are
the ones calibrate quantises, by construction, and the scales found there are calibrate's
ranges (amax / 127): the starting point of training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from edgeseg.errors import ConfigError


@dataclass
class Placement:
    """Calibrate's Q/DQ layout in node terms.

    ``activations``: {tensor: scale} of every quantised activation; ``reads``: {(node, input
    index): tensor} for each input that reads one of them through its Q/DQ pair;
    ``weights``: {(node, input index): axis or None} for each initializer input that reads a
    DequantizeLinear (per-channel along axis, or per-tensor); ``constants``: {(node, input
    index): dequantized value} of those inputs, as the Q/DQ model stores them. ``shared``:
    {tensor: scale initializer}: ONNX Runtime's quantizer gives the output of a MaxPool (and
    the other ops that do not change values) the scale of its input, so tensors that share
    a scale initializer must share one learned scale.
    """

    activations: Dict[str, float] = field(default_factory=dict)
    reads: Dict[Tuple[str, int], str] = field(default_factory=dict)
    weights: Dict[Tuple[str, int], Optional[int]] = field(default_factory=dict)
    constants: Dict[Tuple[str, int], np.ndarray] = field(default_factory=dict)
    shared: Dict[str, str] = field(default_factory=dict)


def read_placement(qdq_model) -> Placement:
    """The layout of a Q/DQ model written by quant.qdq.write_qdq (symmetric INT8; zero points 0)."""
    from onnx import numpy_helper

    graph = qdq_model.graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    placement = Placement()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            scale = initializers[dq.input[1]]
            zero = initializers.get(dq.input[2]) if len(dq.input) > 2 else None
            if zero is not None and np.any(zero != 0):
                raise ConfigError("QAT trains symmetric INT8 (zero points 0, what TensorRT takes); this Q/DQ model "
                                  "is asymmetric.")
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                placement.reads[(node.name, index)] = q.input[0]
                placement.activations[q.input[0]] = float(scale.reshape(-1)[0])
                placement.shared[q.input[0]] = q.input[1]
            elif dq.input[0] in initializers:
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) if scale.size > 1 else None
                placement.weights[(node.name, index)] = axis
                quantized = initializers[dq.input[0]].astype(np.float32)
                shape = [1] * quantized.ndim
                if axis is not None:
                    shape[axis] = -1
                placement.constants[(node.name, index)] = quantized * scale.astype(np.float32).reshape(shape)
    return placement
