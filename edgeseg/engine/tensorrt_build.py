"""Building a TensorRT engine from ONNX, for each TensorRT generation edgeseg supports.

- 8.5 (JetPack 5): explicit-batch flag; FP16/INT8 builder flags; implicit INT8 from
  edgeseg's calibration cache through a calibrator that only reads the cache.
- 10.x (JetPack 6, desktops): explicit batch is implied; explicit INT8 from a Q/DQ ONNX
  or implicit INT8 from the cache; FP16 flag.
- 11.x: strongly typed networks only: precision comes from the ONNX itself (Q/DQ for
  INT8, an FP16 ONNX for FP16); the INT8/FP16 flags and calibrators are gone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from edgeseg.console import say
from edgeseg.errors import ConfigError, EdgesegError

PRECISIONS = ("fp32", "fp16", "int8")
# TensorRT names edgeseg touches only on the generations that still have them (the API
# conformance test checks every other TensorRT name edgeseg uses against each targeted release)
ONLY_BEFORE_10 = frozenset({"get_binding_name", "binding_is_input", "get_binding_dtype", "num_bindings",
                            "set_binding_shape", "get_binding_shape", "execute_async_v2", "device_memory_size"})
ONLY_BEFORE_11 = frozenset({"EXPLICIT_BATCH", "FP16", "INT8", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
                            "int8_calibrator", "set_calibration_profile", "OBEY_PRECISION_CONSTRAINTS",
                            "GPU_FALLBACK", "DLA_core", "default_device_type", "can_run_on_DLA", "DLA",
                            "set_device_type", "precision", "set_output_type", "device_memory_size",
                            # the methods of the calibrator edgeseg subclasses
                            "get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"})


@dataclass(frozen=True)
class BuildPlan:
    """What to ask of TensorRT: a pure function of version and options, testable without TensorRT."""

    trt_major: int
    explicit_batch_flag: bool
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    use_calibration_cache: bool
    obey_precision_constraints: bool = False
    needs_fp16_onnx: bool = False  # TensorRT 11 takes FP16 from the ONNX's own types
    dla_core: Optional[int] = None
    layer_precisions: Dict[str, str] = field(default_factory=dict)
    version_compatible: bool = False


def _version(trt_version: str) -> Tuple[int, int]:
    parts = (trt_version.split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def make_plan(trt_version: str, *, fp16: bool, int8: bool, onnx_is_qdq: bool, has_cache: bool,
              float_layers: bool = False, layer_precisions: Optional[Dict[str, str]] = None,
              dla_core: Optional[int] = None, version_compatible: bool = False) -> BuildPlan:
    major, minor = _version(trt_version)
    overrides = dict(layer_precisions or {})
    for name, precision in overrides.items():
        if precision not in PRECISIONS:
            raise ConfigError(f"--layer-precision {name}={precision}: the precision must be one of "
                              f"{', '.join(PRECISIONS)}.")
    if (major, minor) < (8, 5):
        raise ConfigError(f"TensorRT {trt_version} is too old; edgeseg supports 8.5 and newer.")
    if version_compatible and (major, minor) < (8, 6):
        raise ConfigError(f"--version-compatible engines need TensorRT 8.6 or newer; this is {trt_version}.")
    if major >= 11:
        # no FP16/INT8 flags exist any more: an FP16 ONNX or a Q/DQ ONNX carries the precision
        if int8 and not onnx_is_qdq:
            raise ConfigError("TensorRT 11 builds INT8 only from a Q/DQ ONNX; pass the model.int8.onnx written by "
                              "edgeseg calibrate.")
        if overrides:
            raise ConfigError("TensorRT 11 networks are strongly typed, so --layer-precision cannot apply; keep layers "
                              "in float with edgeseg calibrate --accuracy-budget, which leaves them unquantized.")
        if dla_core is not None:
            raise ConfigError("edgeseg builds DLA engines with TensorRT 8.5-10.x (JetPack 5 and 6, whose boards have "
                              "DLA cores); drop --dla-core for TensorRT 11.")
        return BuildPlan(major, False, True, False, False, False, needs_fp16_onnx=fp16 and not int8 and not onnx_is_qdq,
                         version_compatible=version_compatible)
    if int8 and not onnx_is_qdq and not has_cache:
        raise ConfigError("--int8 needs a calibration cache (model.calib.cache from edgeseg calibrate) or a Q/DQ "
                          "ONNX model.")
    if dla_core is not None and not (fp16 or int8):
        raise ConfigError("The DLA runs only FP16 or INT8; add --fp16 or --int8 to --dla-core.")
    implicit = int8 and not onnx_is_qdq
    # layers the accuracy budget keeps in float are pinned to FP32 only where TensorRT picks precisions itself
    obey = (implicit and float_layers) or bool(overrides)
    return BuildPlan(major, major < 10, False, fp16, int8, implicit, obey_precision_constraints=obey,
                     dla_core=dla_core, layer_precisions=overrides, version_compatible=version_compatible)


def _cache_calibrator(trt, cache_text: str, trt_version: str):
    """An IInt8EntropyCalibrator2 that never sees images: it hands TensorRT edgeseg's cache."""
    header, _, body = cache_text.partition("\n")
    algorithm = header.rsplit("-", 1)[-1] if header.startswith("TRT-") else "EntropyCalibration2"
    version = trt_version.replace(".", "")[:4]
    cache = f"TRT-{version}-{algorithm}\n{body}".encode()
    base = trt.IInt8MinMaxCalibrator if algorithm == "MinMaxCalibration" else trt.IInt8EntropyCalibrator2

    class CacheCalibrator(base):
        def __init__(self):
            base.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None  # no data: the cache holds every range

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, cache_bytes):
            return None

    return CacheCalibrator()


def build_engine_file(onnx_path: Path, out: Path, *, fp16: bool, int8: bool, onnx_is_qdq: bool,
                      calibration_cache: Optional[Path], input_shape: Tuple[int, int, int], max_batch: int,
                      workspace_mb: int, float_layers: Sequence[str] = (), min_batch: int = 1,
                      opt_batch: int = 1, layer_precisions: Optional[Dict[str, str]] = None,
                      dla_core: Optional[int] = None, timing_cache: Optional[Path] = None,
                      version_compatible: bool = False) -> dict:
    """Build and serialise an engine; return what the sidecar should record.

    ``timing_cache`` is read before and written back after the build, so later builds
    on the same GPU and TensorRT skip the kernel timing they already did.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    plan = make_plan(trt.__version__, fp16=fp16, int8=int8, onnx_is_qdq=onnx_is_qdq,
                     has_cache=calibration_cache is not None, float_layers=bool(float_layers),
                     layer_precisions=layer_precisions, dla_core=dla_core, version_compatible=version_compatible)
    builder = trt.Builder(logger)
    flags = 0
    if plan.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgesegError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # lets the inspector name each layer's device
    profile = builder.create_optimization_profile()
    tensor = network.get_input(0)
    c, h, w = input_shape
    profile.set_shape(tensor.name, (min_batch, c, h, w), (opt_batch, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    if plan.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    pinned = dict.fromkeys(float_layers, "fp32") if plan.use_calibration_cache else {}
    pinned.update(plan.layer_precisions)
    if plan.obey_precision_constraints:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_layer_precisions(trt, network, pinned)
    dla = _use_dla(trt, config, network, plan.dla_core) if plan.dla_core is not None else None
    if plan.use_calibration_cache:
        config.set_calibration_profile(profile)
        config.int8_calibrator = _cache_calibrator(trt, calibration_cache.read_text(), trt.__version__)
    cache = _load_timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgesegError(f"TensorRT could not build an engine from {onnx_path.name}; run with a larger "
                           f"--workspace-mb or check the log above.")
    if timing_cache is not None:
        _save_timing_cache(config, timing_cache)
    out.write_bytes(bytes(serialized))
    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(serialized))
    if dla is not None:
        dla["engine_layers"] = _layer_devices(engine)
    return {"tensorrt": trt.__version__, "plan": {k: v for k, v in plan.__dict__.items()},
            "batch": {"min": min_batch, "opt": opt_batch, "max": max_batch}, "max_batch": max_batch,
            "workspace_mb": workspace_mb, "float_layers": list(float_layers), "layer_precisions": pinned,
            "dla": dla, "timing_cache": {"path": str(timing_cache), "reused": cache} if timing_cache else None,
            "io": _io_tensors(trt, engine), "gpu": gpu_identity()}


def _pin_layer_precisions(trt, network, precisions: Dict[str, str]) -> None:
    types = {"fp32": trt.float32, "fp16": trt.float16, "int8": trt.int8}
    found = set()
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.name in precisions:  # the ONNX parser names layers after their ONNX nodes
            found.add(layer.name)
            layer.precision = types[precisions[layer.name]]
            for output in range(layer.num_outputs):
                layer.set_output_type(output, types[precisions[layer.name]])
    missing = sorted(set(precisions) - found)
    if missing:
        raise ConfigError(f"--layer-precision names layers the network does not have: {', '.join(missing[:5])}; "
                          f"use ONNX node names (edgeseg calibrate's sensitivity list prints them).")


def _use_dla(trt, config, network, core: int) -> dict:
    """Put every layer the DLA can run on DLA core ``core``; the rest falls back to the GPU."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    on_dla, on_gpu = [], []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        (on_dla if config.can_run_on_DLA(layer) else on_gpu).append(layer.name)
    if on_gpu:
        say(f"[yellow]{len(on_gpu)} of {network.num_layers} layers cannot run on DLA and fall back to the GPU: "
            f"{', '.join(on_gpu[:8])}{' ...' if len(on_gpu) > 8 else ''}[/yellow]")
    return {"core": core, "dla_layers": len(on_dla), "gpu_fallback_layers": on_gpu}


def _layer_devices(engine) -> Optional[Dict[str, int]]:
    """How many built layers the engine inspector places on DLA and on the GPU."""
    try:
        inspector = engine.create_engine_inspector()
        import tensorrt as trt

        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # the inspector is a report, never a reason to fail a finished build
        return None
    counts = {"dla": 0, "gpu": 0}
    for layer in info.get("Layers", []):
        text = json.dumps(layer) if isinstance(layer, dict) else str(layer)
        counts["dla" if "DLA" in text or "ForeignNode" in text else "gpu"] += 1
    return counts


def _load_timing_cache(config, path: Optional[Path]) -> bool:
    """Attach the timing cache at ``path`` (an empty one if absent); True when an existing cache was reused."""
    if path is None:
        return False
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    reused = bool(data) and config.set_timing_cache(cache, ignore_mismatch=False)
    if data and not reused:  # another GPU or TensorRT wrote it: start afresh rather than mix timings
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        say(f"[yellow]{path} was written by another GPU or TensorRT; building with a fresh timing cache[/yellow]")
    elif reused:
        say(f"Reusing the timing cache {path}")
    return reused


def _save_timing_cache(config, path: Path) -> None:
    from edgeseg.fileio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))


def _io_tensors(trt, engine) -> list:
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        tensors.append({"name": name, "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                        else "output", "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1],
                        "shape": list(engine.get_tensor_shape(name))})
    return tensors


def gpu_identity() -> Optional[dict]:
    """{"name", "compute_capability"} of CUDA device 0, or None when it cannot be asked."""
    try:
        from edgeseg.runtime.cuda_api import load_cuda_api

        return load_cuda_api().device_info()
    except Exception:  # no CUDA binding: the sidecar simply does not record the GPU
        return None


def default_timing_cache(trt_version: str) -> Path:
    """~/.cache/edgeseg/tensorrt/timing-<version>.cache: shared by every build with this TensorRT."""
    import os

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "edgeseg" / "tensorrt" / f"timing-{trt_version}.cache"
