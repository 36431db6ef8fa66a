"""Activation range collection: run the FP32 ONNX model with every float tensor exposed as an output."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np

from edgeseg.quant.histogram import StreamingHistogram


def float_tensors(model) -> List[str]:
    """Names of the float32 activations of ``model`` (graph input and node outputs, not weights)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    initializers = {init.name for init in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    for node in model.graph.node:
        if node.op_type in ("Constant", "Shape"):
            continue
        names.extend(o for o in node.output if o)
    return [n for n in dict.fromkeys(names) if types.get(n) == onnx.TensorProto.FLOAT and n not in initializers]


def collect_histograms(onnx_path: str | Path, batches: Iterable[np.ndarray], progress=None,
                       device: str = "cpu", channel_means: Dict[str, np.ndarray] = None) -> Dict[str, StreamingHistogram]:
    """Stream ``batches`` through the model (ONNX Runtime on ``device``) and histogram every float activation.

    When a ``channel_means`` dict is given, it is filled with the per-channel mean of every
    4-D activation (what bias correction needs), from the same pass.
    """
    from edgeseg.runtime.onnxruntime_runner import providers_for

    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    names = float_tensors(model)
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    # no graph rewrites: a fused node would hide the very tensors whose ranges we need
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=providers_for("cuda" if device == "cuda" else "cpu"))
    input_name = session.get_inputs()[0].name
    histograms = {name: StreamingHistogram() for name in names}
    sums: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    for batch in batches:
        outputs = session.run(names, {input_name: batch})
        for name, value in zip(names, outputs):
            histograms[name].update(value)
            if channel_means is not None and value.ndim == 4:
                sums[name] = sums.get(name, 0.0) + value.sum(axis=(0, 2, 3), dtype=np.float64)
                counts[name] = counts.get(name, 0) + value.shape[0] * value.shape[2] * value.shape[3]
        if progress is not None:
            progress(1)
    if channel_means is not None:
        channel_means.update({name: sums[name] / counts[name] for name in sums})
    return histograms
