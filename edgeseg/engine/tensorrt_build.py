"""Building a TensorRT engine from ONNX, for each TensorRT generation edgeseg supports.

- 8.5 (JetPack 5): explicit-batch flag; FP16/INT8 builder flags; implicit INT8 from
  edgeseg's calibration cache through a calibrator that only reads the cache.
- 10.x (JetPack 6, desktops): explicit batch is implied; explicit INT8 from a Q/DQ ONNX
  or implicit INT8 from the cache; FP16 flag.
- 11.x: strongly typed networks only: precision comes from the ONNX itself (Q/DQ for
  INT8, an FP16 ONNX for FP16); the INT8/FP16 flags and calibrators are gone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from edgeseg.errors import ConfigError, EdgesegError


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


def make_plan(trt_version: str, *, fp16: bool, int8: bool, onnx_is_qdq: bool, has_cache: bool,
              float_layers: bool = False) -> BuildPlan:
    major = int(trt_version.split(".")[0])
    if major < 8:
        raise ConfigError(f"TensorRT {trt_version} is too old; edgeseg supports 8.5 and newer.")
    if major >= 11:
        # no FP16/INT8 flags exist any more: an FP16 ONNX or a Q/DQ ONNX carries the precision
        if int8 and not onnx_is_qdq:
            raise ConfigError("TensorRT 11 builds INT8 only from a Q/DQ ONNX; pass the model.int8.onnx written by "
                              "edgeseg calibrate.")
        return BuildPlan(major, False, True, False, False, False)
    if int8 and not onnx_is_qdq and not has_cache:
        raise ConfigError("--int8 needs a calibration cache (model.calib.cache from edgeseg calibrate) or a Q/DQ "
                          "ONNX model.")
    implicit = int8 and not onnx_is_qdq
    # layers the accuracy budget keeps in float are pinned to FP32 only where TensorRT picks precisions itself
    return BuildPlan(major, major < 10, False, fp16, int8, implicit, obey_precision_constraints=implicit and float_layers)


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
                      workspace_mb: int, float_layers: Sequence[str] = ()) -> dict:
    """Build and serialise an engine; return what the sidecar should record."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    plan = make_plan(trt.__version__, fp16=fp16, int8=int8, onnx_is_qdq=onnx_is_qdq,
                     has_cache=calibration_cache is not None, float_layers=bool(float_layers))
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
    profile = builder.create_optimization_profile()
    tensor = network.get_input(0)
    c, h, w = input_shape
    profile.set_shape(tensor.name, (1, c, h, w), (1, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    if plan.obey_precision_constraints:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        wanted = set(float_layers)
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.name in wanted:  # the ONNX parser names layers after their ONNX nodes
                layer.precision = trt.float32
                for output in range(layer.num_outputs):
                    layer.set_output_type(output, trt.float32)
    if plan.use_calibration_cache:
        config.set_calibration_profile(profile)
        config.int8_calibrator = _cache_calibrator(trt, calibration_cache.read_text(), trt.__version__)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgesegError(f"TensorRT could not build an engine from {onnx_path.name}; run with a larger "
                           f"--workspace-mb or check the log above.")
    out.write_bytes(bytes(serialized))
    return {"tensorrt": trt.__version__, "plan": plan.__dict__, "max_batch": max_batch, "workspace_mb": workspace_mb,
            "float_layers": list(float_layers)}
