"""An FP16 copy of an FP32 ONNX model, for TensorRT 11's strongly typed FP16 engines.

TensorRT 11 removed the FP16 builder flag: a strongly typed network computes in the
types its ONNX declares. So edgeseg writes the FP16 ONNX itself, with ONNX Runtime's
converter, keeping the input and output float32 by default (callers keep feeding and
reading float32; the casts sit inside the engine).
"""
from __future__ import annotations

from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.fileio import atomic_path


def write_fp16_onnx(source: Path, out: Path, keep_io_types: bool = True) -> Path:
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # shipped with every onnxruntime wheel; absent only from trimmed builds
        raise EdgesegError("Writing an FP16 ONNX needs onnxruntime's transformers tools; install the full "
                           "onnxruntime (or onnxruntime-gpu) wheel.") from exc
    model = onnx.load(str(source))
    # values beyond FP16's range are clamped to +-65504 rather than becoming inf
    converted = convert_float_to_float16(model, keep_io_types=keep_io_types)
    _sort_topologically(converted.graph)  # the converter appends its input casts after their consumers
    onnx.checker.check_model(converted)
    with atomic_path(out) as tmp:
        onnx.save(converted, str(tmp))
    return out


def _sort_topologically(graph) -> None:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise EdgesegError("The FP16 ONNX has a cycle or a missing input; report this with the model attached.")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
