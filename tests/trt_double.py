"""A TensorRT test double that answers the way TensorRT's Python API documents, version by version.

Not a mock that accepts any call: every class has fixed attributes (``__slots__``), names a
generation does not have are absent, and the calls return what the API reference says they
return on failure:

- ``IBuilderConfig.get_timing_cache()``: None "if no timing cache is set";
  ``set_timing_cache`` returns False for a cache from another device unless ``ignore_mismatch``.
- ``Builder.build_serialized_network``: None when the build fails; here it fails, as on a
  Jetson, for a dynamic profile on the DLA, and for implicit INT8 whose calibration cache is
  headed for another TensorRT (TensorRT then asks the calibrator for images, and edgeseg's
  calibrator has none: ``get_batch`` returns None).
- ``Runtime.deserialize_cuda_engine``: None for a version-compatible engine unless
  ``engine_host_code_allowed`` is set.
- The ONNX parser turns every node into two layers, named NAME and NAME_<n> (onnx-tensorrt's
  ``generateUniqueName``), with "[ONNX Layer: NAME]" metadata from TensorRT 10 on.
- With a DLA core, the build log carries TensorRT's placement summary at INFO level, with a
  Myelin ForeignNode on the GPU.
"""
from __future__ import annotations

import importlib.machinery
import json
import types
from enum import Enum

import numpy as np


class Severity(Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class DataType(Enum):
    FLOAT = np.float32
    HALF = np.float16
    INT8 = np.int8
    INT32 = np.int32


def version_code(version: str) -> int:
    major, minor, patch = (int(p) for p in (version.split(".") + ["0", "0"])[:3])
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def fake_tensorrt(version: str = "10.3.0", dla_cores: int = 2) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32

    def nptype(dtype):
        if version.startswith("8.5.") and int(version.split(".")[2]) < 3:
            # 8.5.2 builds its table with np.bool, which numpy 1.24 removed (fixed in 8.5.3)
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return dtype.value

    trt.nptype = nptype

    def enum(**members):
        return types.SimpleNamespace(**{k: v for k, v in members.items() if v is not None})

    before_11 = (lambda value: value) if major < 11 else (lambda value: None)
    trt.NetworkDefinitionCreationFlag = enum(EXPLICIT_BATCH=before_11(0), STRONGLY_TYPED=1 if major >= 10 else None)
    trt.BuilderFlag = enum(FP16=before_11("FP16"), INT8=before_11("INT8"), VERSION_COMPATIBLE="VERSION_COMPATIBLE",
                           OBEY_PRECISION_CONSTRAINTS=before_11("OBEY"), GPU_FALLBACK="GPU_FALLBACK")
    trt.MemoryPoolType = enum(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = enum(DETAILED="DETAILED", LAYER_NAMES_ONLY="LAYER_NAMES_ONLY")
    trt.DeviceType = enum(GPU="GPU", DLA="DLA")
    trt.LayerInformationFormat = enum(JSON="JSON", ONELINE="ONELINE")
    trt.TensorIOMode = enum(INPUT="INPUT", OUTPUT="OUTPUT")

    class Logger:
        __slots__ = ("min_severity",)
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING,
                                                         Severity.INFO, Severity.VERBOSE)

        def __init__(self, min_severity=Severity.WARNING):
            self.min_severity = min_severity

        def log(self, severity, msg):
            pass

    class ILogger:
        Severity = Severity

        def __init__(self):
            pass

        def log(self, severity, msg):
            raise RuntimeError('Tried to call pure virtual function "ILogger::log"')

    trt.Logger, trt.ILogger = Logger, ILogger

    trt.LayerType = enum(CONVOLUTION="CONVOLUTION", SHAPE="SHAPE", CONSTANT="CONSTANT", GATHER="GATHER",
                         ELEMENTWISE="ELEMENTWISE")

    class Layer:
        __slots__ = ("name", "metadata", "num_outputs", "_precision", "output_types", "onnx_node", "type", "outputs") \
            if major >= 10 else ("name", "num_outputs", "_precision", "output_types", "onnx_node", "type", "outputs")

        def __init__(self, name, node, layer_type, output):
            self.name, self.num_outputs, self._precision, self.output_types, self.onnx_node = name, 1, None, {}, node
            self.type, self.outputs = layer_type, [output]
            if major >= 10:
                self.metadata = f"[ONNX Layer: {node}]"

        def get_output(self, index):
            return self.outputs[index]

    if major < 11:  # TensorRT 11's strongly typed networks have no per-layer precision
        def _get_precision(self):
            return self._precision

        def _set_precision(self, value):
            self._precision = value

        def set_output_type(self, index, dtype):
            if not 0 <= index < self.num_outputs:
                raise IndexError(index)
            self.output_types[index] = dtype

        Layer.precision = property(_get_precision, _set_precision)
        Layer.set_output_type = set_output_type

    class Tensor:
        __slots__ = ("name", "shape", "dtype", "is_execution_tensor")

        def __init__(self, name, shape=(), dtype=DataType.FLOAT):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype
            # shape arithmetic (INT32 in TensorRT) runs at build time, not in the engine
            self.is_execution_tensor = dtype in (DataType.FLOAT, DataType.HALF)

    class Network:
        __slots__ = ("flags", "layers", "inputs")

        def __init__(self, flags):
            self.flags, self.layers, self.inputs = flags, [], []

        @property
        def num_layers(self):
            return len(self.layers)

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_layer(self, index):
            return self.layers[index]

        def get_input(self, index):
            return self.inputs[index]

    class OnnxParser:
        __slots__ = ("network", "errors")

        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def parse_from_file(self, path):
            import onnx

            model = onnx.load(path)
            self.network.inputs = [Tensor(i.name, [d.dim_value if d.HasField("dim_value") else -1
                                                   for d in i.type.tensor_type.shape.dim]) for i in model.graph.input]
            inferred = onnx.shape_inference.infer_shapes(model).graph
            floats = {v.name for v in list(inferred.value_info) + list(inferred.output)
                      if v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
            counter = 0
            taken = set()
            for node in model.graph.node:
                if node.op_type == "Constant":
                    continue  # the parser turns a Constant node into weights, not a layer
                is_float = all(output in floats for output in node.output)
                layer_type = trt.LayerType.SHAPE if node.op_type == "Shape" else \
                    trt.LayerType.CONVOLUTION if node.op_type == "Conv" else trt.LayerType.ELEMENTWISE
                for _ in range(2):  # every node becomes two layers, named as onnx-tensorrt names them
                    name = node.name
                    while name in taken:
                        name = f"{node.name}_{counter}"
                        counter += 1
                    taken.add(name)
                    output = Tensor(f"{name}_out", dtype=DataType.FLOAT if is_float else DataType.INT32)
                    self.network.layers.append(Layer(name, node.name, layer_type, output))
            return True

    class TimingCache:
        __slots__ = ("device",)

        def __init__(self, device):
            self.device = device

        def serialize(self):
            return f"FAKECACHE:{self.device}".encode()

    class OptimizationProfile:
        __slots__ = ("shapes",)

        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    config_slots = ["profiling_verbosity", "default_device_type", "DLA_core", "flags", "profiles", "pools",
                    "_timing_cache", "calibration_profile"] + (["int8_calibrator"] if major < 11 else [])

    class BuilderConfig:
        __slots__ = tuple(config_slots)

        def __init__(self):
            self.profiling_verbosity, self.default_device_type, self.DLA_core = None, trt.DeviceType.GPU, -1
            self.flags, self.profiles, self.pools, self._timing_cache = set(), [], {}, None
            self.calibration_profile = None
            if major < 11:
                self.int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_flag(self, flag):
            self.flags.add(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def create_timing_cache(self, serialized):
            data = bytes(serialized)
            if not data:
                return TimingCache(DEVICE)
            if not data.startswith(b"FAKECACHE:"):
                return None  # not a timing cache
            return TimingCache(data.split(b":", 1)[1].decode())

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache.device != DEVICE and not ignore_mismatch:
                return False
            self._timing_cache = cache
            return True

        def get_timing_cache(self):
            return self._timing_cache  # None if no timing cache is set

        def can_run_on_DLA(self, layer):
            return "Resize" not in layer.onnx_node

    if major < 11:
        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

        BuilderConfig.set_calibration_profile = set_calibration_profile

    DEVICE = "Orin-8.7"

    class Builder:
        __slots__ = ("logger", "num_DLA_cores")

        def __init__(self, logger):
            self.logger, self.num_DLA_cores = logger, dla_cores

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def _fail(self, message):
            self.logger.log(Severity.ERROR, message)
            return None

        def build_serialized_network(self, network, config):
            on_dla = config.default_device_type == trt.DeviceType.DLA and config.DLA_core >= 0
            for profile in config.profiles:
                for low, opt, high in profile.shapes.values():
                    if on_dla and not low == opt == high:
                        return self._fail("DLA does not support dynamic shapes")
            if major < 11 and trt.BuilderFlag.INT8 in config.flags and config.int8_calibrator is not None:
                calibrator = config.int8_calibrator
                algorithm = "MinMaxCalibration" if isinstance(calibrator, IInt8MinMaxCalibrator) else \
                    "EntropyCalibration2"
                cache = calibrator.read_calibration_cache()
                header = bytes(cache or b"").split(b"\n", 1)[0].decode()
                if header != f"TRT-{version_code(version)}-{algorithm}":
                    # TensorRT skips the cache and calibrates from the calibrator's batches
                    if calibrator.get_batch([network.get_input(0).name]) is None:
                        return self._fail("Calibration failure occurred with no scaling factors detected.")
            pinned = sorted(layer.name for layer in network.layers if major < 11 and layer.precision is not None)
            for layer in network.layers:
                if layer.name in pinned and not layer.get_output(0).is_execution_tensor:
                    return self._fail(f"{layer.name}: a shape tensor's type must be INT32")
                if layer.name in pinned and layer.precision == trt.float16 and trt.BuilderFlag.FP16 not in config.flags:
                    return self._fail("fp16 precision has been set for a layer or layer output, but fp16 is not "
                                      "configured in the builder")
            for input_tensor in network.inputs:
                for low, opt, high in (p.shapes[input_tensor.name] for p in config.profiles):
                    for dim, fixed in enumerate(input_tensor.shape):
                        if fixed > 0 and not low[dim] == opt[dim] == high[dim] == fixed:
                            return self._fail(f"{input_tensor.name}: profile must equal the fixed dimension {dim}")
            if on_dla:
                self._log_placement(network, config)
            engine = {"version_compatible": trt.BuilderFlag.VERSION_COMPATIBLE in config.flags, "pinned": pinned,
                      "input": network.get_input(0).name, "layers": [layer.name for layer in network.layers]}
            return b"FAKEENGINE" + json.dumps(engine).encode()

        def _log_placement(self, network, config):
            dla = [layer.name for layer in network.layers if config.can_run_on_DLA(layer)]
            gpu = [layer.name for layer in network.layers if not config.can_run_on_DLA(layer)]
            lines = ["", "---------- Layers Running on DLA ----------"]
            if dla:
                lines.append(f"[DlaLayer] {{ForeignNode[{dla[0]}...{dla[-1]}]}}")
            lines.append("---------- Layers Running on GPU ----------")
            lines += [f"[GpuLayer] RESIZE: {name}" for name in gpu]
            lines.append("[GpuLayer] MYELIN: {ForeignNode[/head/Shape.../head/Concat]}")
            lines.append("[MemUsageChange] Init builder kernel library: CPU +0, GPU +0, now: CPU 1, GPU 2 (MiB)")
            for line in lines:
                self.logger.log(Severity.INFO, line)

    class Inspector:
        __slots__ = ("layers",)

        def __init__(self, layers):
            self.layers = layers

        def get_engine_information(self, fmt):
            return json.dumps({"Layers": [{"Name": name, "LayerType": "Fake"} for name in self.layers]})

    class Engine:
        __slots__ = ("record",)

        def __init__(self, record):
            self.record = record

        num_io_tensors = 2

        def get_tensor_name(self, index):
            return [self.record["input"], "logits"][index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == self.record["input"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.float32

        def get_tensor_shape(self, name):
            return (-1, 3, 64, 64) if name == self.record["input"] else (-1, 4, 64, 64)

        def create_engine_inspector(self):
            return Inspector(self.record["layers"])

    class Runtime:
        __slots__ = ("logger", "engine_host_code_allowed", "DLA_core")

        def __init__(self, logger):
            self.logger, self.engine_host_code_allowed, self.DLA_core = logger, False, -1

        def deserialize_cuda_engine(self, serialized):
            data = bytes(serialized)
            if not data.startswith(b"FAKEENGINE"):
                return None
            record = json.loads(data[len(b"FAKEENGINE"):])
            if record["version_compatible"] and not self.engine_host_code_allowed:
                self.logger.log(Severity.ERROR, "Cannot deserialize engine with lean runtime: host code not allowed")
                return None
            return Engine(record)

    class IInt8Calibrator:
        def __init__(self):
            pass

    class IInt8EntropyCalibrator2(IInt8Calibrator):
        pass

    class IInt8MinMaxCalibrator(IInt8Calibrator):
        pass

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    if major < 11:
        trt.IInt8EntropyCalibrator2, trt.IInt8MinMaxCalibrator = IInt8EntropyCalibrator2, IInt8MinMaxCalibrator
    trt.engine_record = lambda path: json.loads(open(path, "rb").read()[len(b"FAKEENGINE"):])
    return trt
