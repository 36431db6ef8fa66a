"""The ONNX Runtime 'engine': the model with ONNX Runtime's graph optimisations applied and saved.

Saving the optimised graph moves fusion work (Conv+BN+activation, Q/DQ -> QLinearConv)
from every start-up to build time. Only the 'extended' level is saved: the 'all' level
adds layout changes tied to this machine's CPU, which ONNX Runtime applies again at
load time anyway.
"""
from __future__ import annotations

from pathlib import Path


def build_ort_artifact(onnx_path: Path, out: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return {"onnxruntime": ort.__version__, "optimization": "extended", "provider": "CPUExecutionProvider"}
