"""The trtexec command equivalent to a build plan, for the TensorRT generation it targets.

Users debug engines with trtexec and paste its command lines into issues; printing the
exact equivalent of what edgeseg asked TensorRT for makes both directions easy. The
flags differ by generation: 11.x has no --fp16/--int8/--calib (strongly typed networks,
--stronglyTyped), 8.5-10.x do.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, Optional, Tuple

from edgeseg.engine.tensorrt_build import BuildPlan


def trtexec_command(plan: BuildPlan, onnx_path: Path, engine_path: Path, *, input_name: str,
                    input_shape: Tuple[int, int, int], batch: Tuple[int, int, int], workspace_mb: int,
                    calibration_cache: Optional[Path] = None, timing_cache: Optional[Path] = None,
                    layer_precisions: Optional[Dict[str, str]] = None, static_batch: bool = False) -> str:
    """``layer_precisions``: every pinned layer (calibrate's float fallbacks and --layer-precision).

    ``static_batch``: the ONNX fixes its batch, and trtexec refuses shape flags for a static model.
    """
    c, h, w = input_shape
    low, opt, high = batch
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if not static_batch:
        args += [f"--minShapes={input_name}:{low}x{c}x{h}x{w}", f"--optShapes={input_name}:{opt}x{c}x{h}x{w}",
                 f"--maxShapes={input_name}:{high}x{c}x{h}x{w}"]
    args.append(f"--memPoolSize=workspace:{workspace_mb}")  # MiB in every generation's trtexec
    if plan.strongly_typed:
        args.append("--stronglyTyped")
    if plan.fp16_flag:
        args.append("--fp16")
    if plan.int8_flag:
        args.append("--int8")
    if plan.use_calibration_cache and calibration_cache is not None:
        args.append(f"--calib={calibration_cache}")
    pinned = ",".join(f"{k}:{v}" for k, v in (layer_precisions or {}).items())
    if plan.obey_precision_constraints and pinned:
        args += [f"--layerPrecisions={pinned}", f"--layerOutputTypes={pinned}"]
    if plan.obey_precision_constraints:
        args.append("--precisionConstraints=obey")
    if plan.dla_core is not None:
        args += [f"--useDLACore={plan.dla_core}", "--allowGPUFallback"]
    if plan.version_compatible:
        args.append("--versionCompatible")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)
