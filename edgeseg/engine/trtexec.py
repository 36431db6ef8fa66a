"""The trtexec command equivalent to a build plan, for the TensorRT generation it targets.

Users debug engines with trtexec and paste its command lines into issues; printing the
exact equivalent of what edgeseg asked TensorRT for makes both directions easy. The
flags differ by generation: 11.x has no --fp16/--int8/--calib (strongly typed networks,
--stronglyTyped), 8.5-10.x do.

The line runs on the machine it is meant for, not the one that printed it: every file is
named by its bare name (the user copies those files into one folder and runs the line
there), JetPack's trtexec is named by its full path (JetPack does not put it on PATH),
and the timing cache appears only when the user named one (trtexec 8.5.2 aborts when
its timing cache's folder is missing).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, Optional, Tuple

from edgeseg.engine.tensorrt_build import BuildPlan


def trtexec_command(plan: BuildPlan, onnx_path: Path, engine_path: Path, *, input_name: str,
                    input_shape: Tuple[int, int, int], batch: Tuple[int, int, int], workspace_mb: int,
                    calibration_cache: Optional[Path] = None, timing_cache: Optional[Path] = None,
                    layer_precisions: Optional[Dict[str, str]] = None, static_batch: bool = False,
                    trt_version: Optional[str] = None) -> str:
    """``layer_precisions``: every pinned layer (calibrate's float fallbacks and --layer-precision).

    ``static_batch``: the ONNX fixes its batch, and trtexec refuses shape flags for a static model.
    """
    c, h, w = input_shape
    low, opt, high = batch
    args = [trtexec_binary(plan, trt_version), f"--onnx={Path(onnx_path).name}", f"--saveEngine={Path(engine_path).name}"]
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
        args.append(f"--calib={Path(calibration_cache).name}")
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
        args.append(f"--timingCacheFile={Path(timing_cache).name}")
    return " ".join(shlex.quote(a) for a in args)


# the TensorRT releases of JetPack 5.1 (8.5) and JetPack 6 (10.3): trtexec is built but not on PATH there
JETPACK_TENSORRT = ((8, 5), (10, 3))


def trtexec_binary(plan: BuildPlan, trt_version: Optional[str] = None) -> str:
    """``/usr/src/tensorrt/bin/trtexec`` for a JetPack TensorRT or a DLA build, else ``trtexec``."""
    version = tuple(int(p) for p in (trt_version or "").split(".")[:2] if p.isdigit()) or None
    on_jetson = plan.dla_core is not None or (version in JETPACK_TENSORRT if version else False)
    return "/usr/src/tensorrt/bin/trtexec" if on_jetson else "trtexec"


def files_to_copy(onnx_path: Path, calibration_cache: Optional[Path], timing_cache: Optional[Path]) -> list:
    """The files the printed line names, which the user copies into one folder on the target."""
    return [p for p in (onnx_path, calibration_cache, timing_cache) if p is not None]
