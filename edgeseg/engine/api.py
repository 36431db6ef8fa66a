"""``edgeseg build-engine``: the fastest correct artifact the machine can run."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from edgeseg.console import say
from edgeseg.errors import ConfigError
from edgeseg.fileio import atomic_path, check_output_path, require_file
from edgeseg.sidecar import read_sidecar, spec_from_sidecar, write_sidecar


def tensorrt_available() -> tuple:
    """(True, version) when TensorRT and a CUDA device are usable, else (False, reason)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt Python package is not installed"
    try:
        import tensorrt as trt

        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        if builder is None:
            return False, "TensorRT found no CUDA device"
        return True, trt.__version__
    except Exception as exc:  # a broken CUDA install raises from deep inside TensorRT
        return False, f"TensorRT is installed but unusable ({exc})"


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


def build_engine(model: str, out: Optional[str] = None, *, int8: bool = False, fp16: bool = False,
                 backend: str = "auto", max_batch: int = 8, workspace_mb: int = 2048) -> dict:
    """Build a TensorRT engine from ``model`` (ONNX) or, without TensorRT, the ONNX Runtime artifact.

    ``--int8`` uses the Q/DQ model (``*.int8.onnx``) or the calibration cache next to the
    FP32 model. Says which backend it chose and why.

    >>> edgeseg.build_engine("pruned.int8.onnx", int8=True)  # doctest: +SKIP
    """
    model_path = require_file(model, "ONNX model")
    meta = read_sidecar(model_path, required=True)
    spec, info = spec_from_sidecar(meta)
    if backend not in ("auto", "tensorrt", "onnxruntime"):
        raise ConfigError(f"Unknown --backend '{backend}'; choose auto, tensorrt or onnxruntime.")
    is_qdq = meta.get("precision") == "int8"
    base = _strip(_strip(_strip(model_path.name, ".onnx"), ".int8"), ".fp32")
    cache = model_path.with_name(f"{base}.calib.cache")
    have_trt, why = tensorrt_available()
    if backend == "tensorrt" and not have_trt:
        raise ConfigError(f"--backend tensorrt was asked for but {why}; install TensorRT or use --backend onnxruntime.")
    use_trt = have_trt and backend != "onnxruntime"
    if int8 and not is_qdq and not (use_trt and cache.exists()):
        # ONNX Runtime (and TensorRT without a cache) take INT8 from the Q/DQ model calibrate wrote
        qdq = model_path.with_name(f"{base}.int8.onnx")
        if not qdq.exists():
            raise ConfigError(f"--int8 needs a calibrated model; run edgeseg calibrate {model_path.name} first.")
        say(f"Using {qdq.name}, the Q/DQ model edgeseg calibrate wrote next to {model_path.name}")
        model_path, meta, is_qdq = qdq, read_sidecar(qdq, required=True), True
        spec, info = spec_from_sidecar(meta)
    precision = "int8" if (int8 or is_qdq) else "fp16" if fp16 else "fp32"
    if use_trt:
        out_path = check_output_path(out or model_path.with_name(f"{base}.{precision}.engine"))
        say(f"Backend: TensorRT {why} (found with a CUDA device)")
        from edgeseg.engine.tensorrt_build import build_engine_file

        # the layers calibrate's accuracy budget kept in float stay in float on TensorRT too
        qdq_meta = read_sidecar(model_path.with_name(f"{base}.int8.onnx")) if not is_qdq else meta
        float_layers = (qdq_meta.get("quantization") or {}).get("fallback_layers") or []
        with atomic_path(out_path) as tmp:
            details = build_engine_file(model_path, tmp, fp16=fp16, int8=int8 or is_qdq, onnx_is_qdq=is_qdq,
                                        calibration_cache=cache if cache.exists() and not is_qdq else None,
                                        input_shape=(3, spec.height, spec.width), max_batch=max_batch,
                                        workspace_mb=workspace_mb, float_layers=float_layers)
        kind = "engine"
    else:
        default = model_path.with_name(f"{base}.{precision}.ort.onnx")
        out_path = Path(out) if out else default
        if out_path.suffix in (".engine", ".plan", ".trt"):
            out_path = out_path.with_name(_strip(out_path.name, out_path.suffix) + ".ort.onnx")
        check_output_path(out_path)
        reason = why if backend == "auto" else "--backend onnxruntime was asked for"
        say(f"Backend: ONNX Runtime (CPU), because {reason}; writing {out_path.name}")
        if fp16:
            say("[yellow]--fp16 has no effect on ONNX Runtime's CPU provider; the artifact stays FP32[/yellow]")
            precision = "int8" if is_qdq else "fp32"
        from edgeseg.engine.onnxruntime_build import build_ort_artifact

        with atomic_path(out_path) as tmp:
            details = build_ort_artifact(model_path, tmp)
        kind = "onnx"
    say(f"Wrote {out_path}")
    return write_sidecar(out_path, kind, input_spec=spec, dataset=info, parent=model_path, stage="build-engine",
                         model=meta.get("model"), precision=precision, onnx=meta.get("onnx"),
                         quantization=meta.get("quantization"),
                         engine=dict(details, backend="tensorrt" if use_trt else "onnxruntime"))
