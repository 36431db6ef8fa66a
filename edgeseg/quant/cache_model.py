"""The FP32 twin of the Q/DQ model, for TensorRT's implicit INT8 from the calibration cache.

Implicit INT8 (TensorRT 8.5, the DLA) reads only ranges from the cache; it knows nothing of
calibrate's bias correction and would quantise the classifier too. So calibrate also writes
the FP32 graph with the same corrected biases as the Q/DQ model, and names the layers the
Q/DQ model keeps in float (the logits path and whatever --max-miou-drop kept), which
build-engine then pins to FP32. Tensor names are unchanged, so the cache still applies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np


def write_cache_model(onnx_path: Path, out_path: Path, bias_shifts: Dict[str, np.ndarray],
                      float_nodes: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Write the bias-corrected FP32 twin of ``onnx_path``.

    Returns (nodes whose biases changed, the float nodes TensorRT should pin to FP32): of
    ``float_nodes``, those that compute float tensors (the size arithmetic in front of a
    Resize and the constants are integer or weights, which TensorRT cannot pin).
    """
    import onnx

    from edgeseg.quant.bias_correction import correct_biases
    from edgeseg.quant.qdq import ensure_node_names

    model = onnx.load(str(onnx_path))
    ensure_node_names(model)  # the names write_qdq gives, so float_nodes and the shifts refer to the same nodes
    kept_float = set(float_nodes)
    changed = correct_biases(model, {name: shift for name, shift in bias_shifts.items() if name not in kept_float})
    onnx.save(model, str(out_path))
    return changed, float_compute_nodes(model, float_nodes)


def float_compute_nodes(model, names: Sequence[str]) -> List[str]:
    """The nodes of ``names`` that are not Constants and whose every output is a float tensor."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    wanted = set(names)
    return [node.name for node in model.graph.node if node.name in wanted and node.op_type != "Constant"
            and all(types.get(output) in floats for output in node.output)]
