"""Activation range collection: run the FP32 ONNX model with the tensors it needs exposed as outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Iterator, List

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


def stream_activations(onnx_path: str | Path, batches: Iterable[np.ndarray], names: List[str],
                       device: str = "cpu") -> Iterator[Dict[str, np.ndarray]]:
    """Run the FP32 model (ONNX Runtime on ``device``) on each batch; yield the named tensors' values."""
    from edgeseg.runtime.onnxruntime_runner import providers_for

    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    # no graph rewrites: a fused node would hide the very tensors we need
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=providers_for("cuda" if device == "cuda" else "cpu"))
    input_name = session.get_inputs()[0].name
    for batch in batches:
        yield dict(zip(names, session.run(names, {input_name: batch})))


def collect_histograms(onnx_path: str | Path, batches: Iterable[np.ndarray], progress=None,
                       device: str = "cpu") -> Dict[str, StreamingHistogram]:
    """Stream ``batches`` through the model and histogram every float activation."""
    import onnx

    names = float_tensors(onnx.load(str(onnx_path)))
    histograms = {name: StreamingHistogram() for name in names}
    for values in stream_activations(onnx_path, batches, names, device):
        for name, value in values.items():
            histograms[name].update(value)
        if progress is not None:
            progress(1)
    return histograms
