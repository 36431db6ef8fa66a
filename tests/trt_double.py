"""A TensorRT test double that answers the way TensorRT's Python API documents, version by version.

edgeseg builds and runs engines through NVIDIA's Polygraphy, so this double is driven by
Polygraphy's real code (``CreateConfig``, ``NetworkFromOnnxPath``, ``EngineBytesFromNetwork``,
``TrtRunner``): the tests see what Polygraphy really configures, not what edgeseg meant to.

Not a mock that accepts any call: every class has fixed attributes (``__slots__``), names a
generation does not have are absent, and the calls fail the way TensorRT documents:

- ``OnnxParser.parse_from_file`` applies edgeseg's TensorRT rules check (onnx-tensorrt's
  operator docs for this version): an INT32 bias into DequantizeLinear, an asymmetric zero
  point or an unsupported operator is a parser error, as on the device.
- ``Builder.build_serialized_network`` returns None (and logs the error) for: Q/DQ layers
  without the INT8 flag on a network that is not strongly typed; a dynamic profile on the
  DLA; a profile that differs from a fixed input dimension; implicit INT8 whose calibration
  cache is headed for another TensorRT or calibrator (TensorRT then asks for images, and
  edgeseg's calibrator has none); an FP16-pinned layer without the FP16 flag; a precision
  pinned on a shape tensor.
- ``IBuilderConfig.get_timing_cache()``: None "if no timing cache is set";
  ``set_timing_cache`` returns False for a cache from another device unless ``ignore_mismatch``.
- ``Runtime.deserialize_cuda_engine``: None for a version-compatible engine unless
  ``engine_host_code_allowed``, and for a DLA engine unless the runtime's ``DLA_core`` is set.
- The ONNX parser turns every node into two layers, named NAME and NAME_<n> (onnx-tensorrt's
  ``generateUniqueName``), with "[ONNX Layer: NAME]" metadata from TensorRT 10 on.
- With a DLA core, the build log carries TensorRT's placement summary at INFO level, with a
  Myelin ForeignNode on the GPU.
- The engine records what the build was asked for (flags, profiles, pinned precisions,
  calibrator, DLA core) and, when executed, computes the ONNX with ONNX Runtime, writing
  each output through the IOutputAllocator as TensorRT does; device memory is host memory
  behind a CUDA wrapper double (``FakeCuda``) handed to Polygraphy.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import json
import sys
import types
from enum import Enum, IntEnum

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
    INT64 = np.int64
    UINT8 = np.uint8
    BOOL = np.bool_


ONNX_TO_TRT = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 7: DataType.INT64,
               2: DataType.UINT8, 9: DataType.BOOL}


def version_code(version: str) -> int:
    major, minor, patch = (int(p) for p in (version.split(".") + ["0", "0"])[:3])
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def fake_tensorrt(version: str = "10.3.0", dla_cores: int = 2) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
    trt.int64, trt.uint8, trt.bool = DataType.INT64, DataType.UINT8, DataType.BOOL
    trt.DataType = DataType

    def nptype(dtype):
        if version.startswith("8.5.") and int(version.split(".")[2]) < 3:
            # 8.5.2 builds its table with np.bool, which numpy 1.24 removed (fixed in 8.5.3)
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return dtype.value

    trt.nptype = nptype
    trt.init_libnvinfer_plugins = lambda logger, namespace: True

    def members(*names):
        return [name for name in names if name]

    before_11 = (lambda name: name) if major < 11 else (lambda name: None)
    trt.NetworkDefinitionCreationFlag = IntEnum("NetworkDefinitionCreationFlag", {
        name: value for name, value in (("EXPLICIT_BATCH", 0), ("STRONGLY_TYPED", 1))
        if (name == "EXPLICIT_BATCH" and major < 11) or (name == "STRONGLY_TYPED" and major >= 10)})
    trt.BuilderFlag = Enum("BuilderFlag", members(before_11("FP16"), before_11("INT8"), "TF32",
                                                  before_11("OBEY_PRECISION_CONSTRAINTS"),
                                                  before_11("PREFER_PRECISION_CONSTRAINTS"), before_11("DIRECT_IO"),
                                                  "VERSION_COMPATIBLE", "GPU_FALLBACK"))
    trt.MemoryPoolType = Enum("MemoryPoolType", ["WORKSPACE"])
    trt.ProfilingVerbosity = Enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED"])
    trt.DeviceType = Enum("DeviceType", ["GPU", "DLA"])
    trt.LayerInformationFormat = Enum("LayerInformationFormat", ["ONELINE", "JSON"])
    trt.TensorIOMode = Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.TensorFormat = Enum("TensorFormat", ["LINEAR", "HWC", "CHW16"])
    trt.LayerType = Enum("LayerType", ["CONVOLUTION", "SHAPE", "CONSTANT", "ELEMENTWISE", "QUANTIZE", "DEQUANTIZE"])

    class Logger:
        __slots__ = ("min_severity",)
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING,
                                                         Severity.INFO, Severity.VERBOSE)
        Severity = Severity

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
            return self._precision if self._precision is not None else DataType.FLOAT

        def _set_precision(self, value):
            self._precision = value

        def set_output_type(self, index, dtype):
            if not 0 <= index < self.num_outputs:
                raise IndexError(index)
            self.output_types[index] = dtype

        Layer.precision = property(_get_precision, _set_precision)
        Layer.precision_is_set = property(lambda self: self._precision is not None)
        Layer.set_output_type = set_output_type

    class Tensor:
        __slots__ = ("name", "shape", "dtype", "is_execution_tensor", "is_shape_tensor")

        def __init__(self, name, shape=(), dtype=DataType.FLOAT):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype
            # shape arithmetic (INT32 in TensorRT) runs at build time, not in the engine
            self.is_execution_tensor = dtype in (DataType.FLOAT, DataType.HALF)
            self.is_shape_tensor = False

    class Network:
        __slots__ = ("flags", "layers", "inputs", "outputs", "onnx_path")

        def __init__(self, flags):
            self.flags, self.layers, self.inputs, self.outputs, self.onnx_path = flags, [], [], [], None

        def __iter__(self):
            return iter(self.layers)

        @property
        def num_layers(self):
            return len(self.layers)

        @property
        def num_inputs(self):
            return len(self.inputs)

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_layer(self, index):
            return self.layers[index]

        def get_input(self, index):
            return self.inputs[index]

        def get_output(self, index):
            return self.outputs[index]

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

    class OnnxParser:
        __slots__ = ("network", "errors", "flags")

        def __init__(self, network, logger):
            self.network, self.errors, self.flags = network, [], 0

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def parse_from_file(self, path):
            import onnx

            from edgeseg.engine.trt_rules import check_for_tensorrt

            model = onnx.load(path)
            refused = check_for_tensorrt(model, version)
            if refused:  # what onnx-tensorrt's parser refuses for this version, it refuses here
                self.errors = [f"In node {problem}" for problem in refused]
                return False
            self.network.onnx_path = str(path)
            initializers = {t.name for t in model.graph.initializer}
            self.network.inputs = [
                Tensor(i.name, [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim],
                       ONNX_TO_TRT.get(i.type.tensor_type.elem_type, DataType.FLOAT))
                for i in model.graph.input if i.name not in initializers]
            self.network.outputs = [Tensor(o.name, dtype=ONNX_TO_TRT.get(o.type.tensor_type.elem_type, DataType.FLOAT))
                                    for o in model.graph.output]
            inferred = onnx.shape_inference.infer_shapes(model).graph
            floats = {v.name for v in list(inferred.value_info) + list(inferred.output)
                      if v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
            counter = 0
            taken = set()
            kinds = {"Shape": trt.LayerType.SHAPE, "Conv": trt.LayerType.CONVOLUTION,
                     "QuantizeLinear": trt.LayerType.QUANTIZE, "DequantizeLinear": trt.LayerType.DEQUANTIZE}
            for node in model.graph.node:
                if node.op_type == "Constant":
                    continue  # the parser turns a Constant node into weights, not a layer
                is_float = all(output in floats for output in node.output)
                layer_type = kinds.get(node.op_type, trt.LayerType.ELEMENTWISE)
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
            return HostMemory(f"FAKECACHE:{self.device}".encode())

        def combine(self, other, ignore_mismatch):
            return other.device == self.device or ignore_mismatch

    class OptimizationProfile:
        __slots__ = ("shapes",)

        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

        def get_shape(self, name):
            return self.shapes[name]

    config_slots = ["profiling_verbosity", "default_device_type", "DLA_core", "flags", "profiles", "pools",
                    "_timing_cache", "calibration_profile"] + (["int8_calibrator"] if major < 11 else [])

    class BuilderConfig:
        __slots__ = tuple(config_slots)

        def __init__(self):
            self.profiling_verbosity, self.default_device_type, self.DLA_core = None, trt.DeviceType.GPU, -1
            self.flags, self.profiles, self.pools, self._timing_cache = {trt.BuilderFlag.TF32}, [], {}, None
            self.calibration_profile = None
            if major < 11:
                self.int8_calibrator = None

        @property
        def num_optimization_profiles(self):
            return len(self.profiles)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

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

        def get_calibration_profile(self):
            return self.calibration_profile

        BuilderConfig.set_calibration_profile = set_calibration_profile
        BuilderConfig.get_calibration_profile = get_calibration_profile

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
            if self.logger is not None:
                self.logger.log(Severity.ERROR, message)
            return None

        def build_serialized_network(self, network, config):
            flag = trt.BuilderFlag
            on_dla = config.default_device_type == trt.DeviceType.DLA and config.DLA_core >= 0
            strongly_typed = major >= 11 or network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) \
                if major >= 10 else False
            has_qdq = any(layer.type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE) for layer in network)
            if has_qdq and not strongly_typed and flag.INT8 not in config.flags:
                return self._fail("Network contains Q/DQ layers, but the INT8 builder flag is not set")
            for profile in config.profiles:
                for low, opt, high in profile.shapes.values():
                    if on_dla and not low == opt == high:
                        return self._fail("DLA does not support dynamic shapes")
            calibration = None
            if major < 11 and flag.INT8 in config.flags and config.int8_calibrator is not None and not has_qdq:
                calibrator = config.int8_calibrator
                algorithm = "MinMaxCalibration" if isinstance(calibrator, IInt8MinMaxCalibrator) else \
                    "EntropyCalibration2"
                cache = calibrator.read_calibration_cache()
                header = bytes(cache or b"").split(b"\n", 1)[0].decode()
                if header != f"TRT-{version_code(version)}-{algorithm}":
                    # TensorRT skips the cache and calibrates from the calibrator's batches
                    if calibrator.get_batch([network.get_input(0).name]) is None:
                        return self._fail("Calibration failure occurred with no scaling factors detected.")
                calibration = {"calibrator": algorithm, "cache_header": header,
                               "profile": config.calibration_profile.shapes if config.calibration_profile else None}
            pinned = {layer.name: layer._precision.name for layer in network.layers
                      if major < 11 and layer._precision is not None}
            for layer in network.layers:
                if layer.name in pinned and not layer.get_output(0).is_execution_tensor:
                    return self._fail(f"{layer.name}: a shape tensor's type must be INT32")
                if pinned.get(layer.name) == "HALF" and flag.FP16 not in config.flags:
                    return self._fail("fp16 precision has been set for a layer or layer output, but fp16 is not "
                                      "configured in the builder")
            for input_tensor in network.inputs:
                for low, opt, high in (p.shapes[input_tensor.name] for p in config.profiles):
                    for dim, fixed in enumerate(input_tensor.shape):
                        if fixed > 0 and not low[dim] == opt[dim] == high[dim] == fixed:
                            return self._fail(f"{input_tensor.name}: profile must equal the fixed dimension {dim}")
            if on_dla:
                self._log_placement(network, config)
            engine = {"version_compatible": flag.VERSION_COMPATIBLE in config.flags, "pinned": pinned,
                      "flags": sorted(f.name for f in config.flags), "strongly_typed": strongly_typed,
                      "profiles": [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles],
                      "workspace": config.pools.get(trt.MemoryPoolType.WORKSPACE), "calibration": calibration,
                      "dla_core": config.DLA_core if on_dla else None,
                      "onnx": network.onnx_path, "inputs": [[t.name, t.dtype.name] for t in network.inputs],
                      "outputs": [[t.name, t.dtype.name] for t in network.outputs],
                      "layers": [layer.name for layer in network.layers]}
            return HostMemory(b"FAKEENGINE" + json.dumps(engine).encode())

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

    class IOutputAllocator:
        def __init__(self):
            pass

    class IDebugListener:
        def __init__(self):
            pass

    class ICudaEngine:
        __slots__ = ("record", "io")

        def __init__(self, record):
            self.record = record
            self.io = [(name, trt.TensorIOMode.INPUT, DataType[dtype]) for name, dtype in record["inputs"]] + \
                [(name, trt.TensorIOMode.OUTPUT, DataType[dtype]) for name, dtype in record["outputs"]]

        @property
        def num_io_tensors(self):
            return len(self.io)

        device_memory_size = 1 << 20

        def get_tensor_name(self, index):
            return self.io[index][0]

        def _entry(self, name):
            return next(entry for entry in self.io if entry[0] == name)

        def get_tensor_mode(self, name):
            return self._entry(name)[1]

        def get_tensor_dtype(self, name):
            return self._entry(name)[2]

        def get_tensor_shape(self, name):
            profile = self.record["profiles"][0].get(name)
            return tuple(-1 if i == 0 else d for i, d in enumerate(profile[1])) if profile else (-1,)

        if major >= 10:
            def get_tensor_format(self, name, profile_index=0):
                return trt.TensorFormat.LINEAR
        else:  # 8.5's binding takes the name alone (Polygraphy falls back to it on the TypeError)
            def get_tensor_format(self, name):
                return trt.TensorFormat.LINEAR

        def is_shape_inference_io(self, name):
            return False

        def create_execution_context(self):
            return IExecutionContext(self)

        def create_engine_inspector(self):
            return Inspector(self.record["layers"])

    class IExecutionContext:
        __slots__ = ("engine", "shapes", "addresses", "allocators", "active_optimization_profile", "session",
                     "debug_listener")

        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.allocators = engine, {}, {}, {}
            self.active_optimization_profile, self.session, self.debug_listener = 0, None, None

        if major >= 10:  # debug tensors: Polygraphy's TrtRunner installs its listener on activation
            def set_all_tensors_debug_state(self, flag):
                return True

            def set_debug_listener(self, listener):
                if not isinstance(listener, IDebugListener):
                    raise TypeError("set_debug_listener(): incompatible function arguments")
                self.debug_listener = listener
                return True

        def set_input_shape(self, name, shape):
            low, _, high = self.engine.record["profiles"][0][name]
            if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
                return False  # outside the optimisation profile
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shapes.get(name, self.engine.get_tensor_shape(name))

        def get_tensor_address(self, name):
            return self.addresses.get(name, 0)

        def set_tensor_address(self, name, address):
            self.addresses[name] = int(address)
            return True

        def set_output_allocator(self, name, allocator):
            self.allocators[name] = allocator
            return True

        def execute_async_v3(self, stream_handle):
            import onnxruntime as ort

            record = self.engine.record
            if self.session is None:
                self.session = ort.InferenceSession(record["onnx"], providers=["CPUExecutionProvider"])
            feeds = {}
            for name, dtype in record["inputs"]:
                if name not in self.shapes or not self.addresses.get(name):
                    return False  # TensorRT: every input needs a shape and an address
                shape = self.shapes[name]
                count = int(np.prod(shape))
                raw = (ctypes.c_byte * (count * np.dtype(DataType[dtype].value).itemsize)).from_address(
                    self.addresses[name])
                feeds[name] = np.frombuffer(raw, dtype=DataType[dtype].value).reshape(shape).astype(np.float32)
            results = self.session.run(None, feeds)
            CLOCK[0] += EXECUTE_MS  # the device time of the execution, which the runner's events must bracket
            for (name, _), value in zip(record["outputs"], results):
                if name not in self.allocators:
                    return False  # TensorRT: an output without an address or allocator fails the execution
                value = np.ascontiguousarray(value)
                pointer = self.allocators[name].reallocate_output(name, 0, max(value.nbytes, 1), 256)
                ctypes.memmove(pointer, value.ctypes.data, value.nbytes)
                self.allocators[name].notify_shape(name, value.shape)
            return True

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
            if record["dla_core"] is not None and self.DLA_core < 0:
                self.logger.log(Severity.ERROR, "Engine was built for a DLA core but the runtime has none set")
                return None
            return ICudaEngine(record)

    class IInt8Calibrator:
        def __init__(self):
            pass

    class IInt8EntropyCalibrator2(IInt8Calibrator):
        pass

    class IInt8MinMaxCalibrator(IInt8Calibrator):
        pass

    class IInt8LegacyCalibrator(IInt8Calibrator):
        pass

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.ICudaEngine, trt.IExecutionContext, trt.IOutputAllocator = ICudaEngine, IExecutionContext, IOutputAllocator
    if major >= 10:
        trt.IDebugListener = IDebugListener
    if major < 11:
        trt.IInt8Calibrator, trt.IInt8LegacyCalibrator = IInt8Calibrator, IInt8LegacyCalibrator
        trt.IInt8EntropyCalibrator2, trt.IInt8MinMaxCalibrator = IInt8EntropyCalibrator2, IInt8MinMaxCalibrator
    trt.engine_record = lambda path: json.loads(open(path, "rb").read()[len(b"FAKEENGINE"):])
    return trt


# a device clock in milliseconds: executions and copies advance it, CUDA events read it
CLOCK = [0.0]
EXECUTE_MS, COPY_MS = 1.0, 0.25


class HostMemory(bytes):
    """IHostMemory: bytes that are also a context manager, as Polygraphy uses TensorRT's."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeCuda:
    """Polygraphy's CUDA wrapper (``polygraphy.cuda.wrapper()``) over host memory: device pointers are host addresses."""

    def __init__(self):
        self.blocks = {}
        self.handle = FakeCudart()

    def check(self, status):
        if status != 0:
            from polygraphy.exception import PolygraphyException

            raise PolygraphyException(f"CUDA Error: {status}")

    def create_stream(self):
        return 0xC0DA

    def stream_synchronize(self, ptr):
        pass

    def destroy_stream(self, ptr):
        pass

    def malloc(self, nbytes):
        block = ctypes.create_string_buffer(max(int(nbytes), 1))
        self.blocks[ctypes.addressof(block)] = block
        return ctypes.addressof(block)

    def free(self, ptr):
        self.blocks.pop(ptr, None)

    def memcpy(self, dst, src, nbytes, kind, stream_ptr=None):
        ctypes.memmove(dst, src, int(nbytes.value if hasattr(nbytes, "value") else nbytes))
        CLOCK[0] += COPY_MS


class FakeCudart:
    """The libcudart calls edgeseg makes itself (device facts, events), answering as the CUDA runtime does."""

    def __init__(self):
        self.recorded = {}

    def cudaDeviceGetAttribute(self, value, attribute, device):
        value._obj.value = {75: 8, 76: 7}[attribute]
        return 0

    def cudaGetDeviceProperties(self, props, device):
        props.raw = b"Orin" + b"\0" * (len(props.raw) - 4)
        return 0

    def cudaMemGetInfo(self, free, total):
        free._obj.value, total._obj.value = 1 << 30, 2 << 30
        return 0

    def cudaEventCreate(self, event):
        event._obj.value = id(event._obj)
        return 0

    def cudaEventRecord(self, event, stream):
        self.recorded[event.value] = CLOCK[0]
        return 0

    def cudaEventSynchronize(self, event):
        return 0

    def cudaEventElapsedTime(self, ms, start, end):
        ms._obj.value = self.recorded[end.value] - self.recorded[start.value]
        return 0

    def cudaEventDestroy(self, event):
        return 0


def install(monkeypatch, version: str = "10.3.0", dla_cores: int = 2):
    """Put the double where Polygraphy and edgeseg import TensorRT and CUDA; returns the fake module.

    Polygraphy imports TensorRT lazily and keeps the first module it got, and it keeps one
    TensorRT logger: both are reset so each test's version is the one Polygraphy talks to.
    """
    trt = fake_tensorrt(version, dla_cores)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if type(value).__name__ == "LazyModule" and getattr(value, "module", None) is not None and \
                    getattr(value.module, "__name__", "") == "tensorrt":
                object.__setattr__(value, "module", None)
    import polygraphy.backend.trt.util as trt_util
    import polygraphy.cuda.cuda as polygraphy_cuda

    monkeypatch.setattr(trt_util, "TRT_LOGGER", None)
    monkeypatch.setattr(polygraphy_cuda, "G_CUDA", FakeCuda())
    return trt
