"""Bias correction: subtract from each convolution's bias the mean output shift INT8 causes.

The shift per output channel is measured by conv_error (weights rounded, input rounded
and clipped, padding included); a convolution without a bias gets one.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np


def correct_biases(model, shifts: Dict[str, np.ndarray]) -> List[str]:
    """Subtract each Conv's shift from its bias (adding a bias where it has none); return the nodes changed."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    corrected = []
    for node in model.graph.node:
        shift = shifts.get(node.name)
        if node.op_type != "Conv" or shift is None:
            continue
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
