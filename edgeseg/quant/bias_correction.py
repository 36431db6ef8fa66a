"""Bias correction: undo the systematic output shift that rounding the weights to INT8 causes.

Quantising a convolution's weights W to W_q changes its expected output by
(W_q - W) * E[x]. With the per-channel mean of the conv's input measured during
calibration, that shift is computed per output channel and subtracted from the bias
(Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019, in its empirical form). Zero padding at the borders is
ignored, as in the paper.
"""
from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np


def int8_per_channel(weights: np.ndarray) -> np.ndarray:
    """Weights after symmetric per-output-channel INT8 quantisation (what the Q/DQ model will compute with)."""
    flat = weights.reshape(weights.shape[0], -1)
    scale = np.abs(flat).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    quantised = np.clip(np.round(flat / scale[:, None]), -127, 127) * scale[:, None]
    return quantised.reshape(weights.shape).astype(weights.dtype)


def correct_biases(model, channel_means: Dict[str, np.ndarray], skip: Iterable[str] = ()) -> List[str]:
    """Adjust (or add) the bias of every Conv in ``model`` whose input mean is known; return the corrected nodes."""
    from onnx import numpy_helper

    skipped = set(skip)
    initializers = {init.name: init for init in model.graph.initializer}
    corrected = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in skipped or len(node.input) < 2:
            continue
        weight_init = initializers.get(node.input[1])
        mean = channel_means.get(node.input[0])
        if weight_init is None or mean is None:
            continue
        weights = numpy_helper.to_array(weight_init)
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_channels, in_per_group = weights.shape[:2]
        delta = (int8_per_channel(weights) - weights).sum(axis=(2, 3))  # (out, in/groups)
        group_of_output = np.arange(out_channels) // (out_channels // groups)
        input_index = group_of_output[:, None] * in_per_group + np.arange(in_per_group)[None, :]
        shift = (delta * mean[input_index]).sum(axis=1)
        if len(node.input) > 2 and node.input[2] in initializers:
            bias_init = initializers[node.input[2]]
            bias = numpy_helper.to_array(bias_init).astype(np.float64) - shift
            bias_init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), bias_init.name))
        else:
            name = f"{node.name}_corrected_bias"
            model.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
        corrected.append(node.name)
    return corrected
