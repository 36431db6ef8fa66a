"""Writing what QAT trained with calibrate's own writer: the Q/DQ ONNX (api.py writes the cache and the twin).

The trained weights go back into the FP32 ONNX they were read from (same initializer
names), and calibrate's ``write_qdq`` quantises that graph with the learned ranges
(amax = scale x 127, which the writer turns back into the same scale) and the same
float layers: the layout is calibrate's by construction, and the weight scales the writer
derives from the final weights are those the fake quantisation used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np


def with_weights(fp32_path: Path, weights: Dict[str, "object"], out_path: Path) -> None:
    """Save the FP32 ONNX at ``fp32_path`` with ``weights`` ({initializer: tensor}) replacing its own."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    for init in model.graph.initializer:
        if init.name in weights:
            value = np.asarray(weights[init.name].detach().cpu().numpy(), dtype=np.float32)
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    onnx.save(model, str(out_path))


def learned_ranges(ranges: Dict[str, Tuple[float, float]], amax: Dict[str, float]) -> Dict[str, Tuple[float, float]]:
    """Calibrate's ranges with each quantised activation's learned symmetric range in place of its own."""
    return {**ranges, **{name: (-value, value) for name, value in amax.items()}}


def write_qat_qdq(trained_fp32: Path, out_path: Path, ranges: Dict[str, Tuple[float, float]], *,
                  float_nodes: Sequence[str], quantize_outputs: bool) -> List[str]:
    """The Q/DQ model of the trained graph by calibrate's writer (symmetric; no bias shifts: QAT trained the biases)."""
    from edgeseg.quant.qdq import write_qdq

    return write_qdq(trained_fp32, out_path, ranges, symmetric=True, nodes_to_exclude=float_nodes,
                     quantize_outputs=quantize_outputs)
