"""TensorRT runner: Polygraphy's TrtRunner, with edgeseg's trust checks and timing around it.

Polygraphy binds every input and output (an engine from elsewhere may have several
outputs), allocates outputs as TensorRT asks, and reaches CUDA through the system's own
``libcudart`` (so it always matches the device's driver, which cuda-python 12.9 does not
on JetPack 6). edgeseg keeps what is its own: an engine is executable code to NVIDIA, so
an engine whose sha256 differs from its sidecar is refused unless the user says
``--trust-engine``; a version-compatible engine's host code runs only with the user's
opt-in; the runtime's DLA core is set before deserialising; the compute time comes from
two CUDA events around the execution alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgeseg.errors import EdgesegError, MissingDependencyError, UntrustedFileError
from edgeseg.fileio import sha256_of
from edgeseg.runtime.base import Runner


class TensorRTRunner(Runner):
    """An engine run through Polygraphy's TrtRunner; returns the engine's first output (logits or class map).

    A returned array is a fresh host copy: it stays valid after the runner is deactivated.
    """

    backend = "tensorrt"

    def __init__(self, path: str, input_shape, precision: str, device: str, meta: dict, trust_engine: bool = False,
                 allow_host_code: bool = False, dla_core: Optional[int] = None):
        super().__init__(path, input_shape, precision, device)
        self.meta, self.trust_engine, self.allow_host_code = meta, trust_engine, allow_host_code
        # an engine edgeseg built records its core; for one built elsewhere the user says it (--engine-dla-core)
        built_on = ((meta.get("engine") or {}).get("dla") or {}).get("core", meta.get("dla_core"))
        self.dla_core = dla_core if dla_core is not None else built_on
        self.engine = self.runner = self.device_input = self.timer = self.runtime = None

    def _activate_impl(self) -> None:
        # the trust checks come first: they must hold whether or not TensorRT is installed
        expected = self.meta.get("sha256")
        if not self.trust_engine and expected != sha256_of(self.path):
            raise UntrustedFileError(f"{self.path} does not match the sha256 in its sidecar (or has none); an engine "
                                     f"is executable code, so rebuild it or pass --trust-engine if you made it.")
        built = self.meta.get("engine") or {}
        if (built.get("plan") or {}).get("version_compatible") and not self.allow_host_code:
            raise UntrustedFileError(f"{Path(self.path).name} is a version-compatible engine that carries TensorRT "
                                     f"host code; run it only if you trust it, with --allow-engine-host-code.")
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingDependencyError("TensorRT is not installed; engines run only where TensorRT is (ONNX files "
                                         "run everywhere with ONNX Runtime).") from exc
        from edgeseg.engine.tensorrt_build import polygraphy_failure, polygraphy_trt

        backend = polygraphy_trt()
        self.trt = trt
        from polygraphy.exception import PolygraphyException

        self._failures = (OSError, PolygraphyException)  # what a run may raise, resolved once, off the hot path
        try:
            self._open(trt, backend)
        except OSError as exc:  # Polygraphy found no libcudart to load
            self._close()
            raise MissingDependencyError(f"Running {Path(self.path).name} needs the CUDA runtime library (libcudart), "
                                         f"which was not found ({exc}); put CUDA's lib64 folder on LD_LIBRARY_PATH "
                                         f"or pip install nvidia-cuda-runtime-cu12.") from None
        except PolygraphyException as exc:
            self._close()
            raise polygraphy_failure(exc, f"TensorRT could not open {Path(self.path).name}") from None

    def _open(self, trt, backend) -> None:
        from polygraphy import cuda
        from polygraphy.datatype import DataType

        from edgeseg.engine.tensorrt_build import deserialize
        from edgeseg.runtime.cuda_device import EventTimer, device_info

        problem = engine_mismatch(self.meta, Path(self.path).name, trt.__version__, device_info())
        if problem:
            raise EdgesegError(problem)
        self.runtime, self.engine = deserialize(trt, Path(self.path).read_bytes(), dla_core=self.dla_core,
                                                host_code_allowed=self.allow_host_code)
        if self.engine is None:
            raise EdgesegError(f"TensorRT could not load {self.path}; it was built for another GPU or TensorRT.")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise EdgesegError(f"{Path(self.path).name} has {len(inputs)} inputs and {len(outputs)} outputs; edgeseg "
                               f"runs engines with one image input and the segmentation as their first output.")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = numpy_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.timer = EventTimer()
        self.runner = backend.TrtRunner(self.engine)
        self.runner.activate()
        # the events go around TensorRT's execution alone, not Polygraphy's per-call work before and after it
        self.runner.context = TimedContext(self.runner.context, self.timer)
        self.device_input = cuda.DeviceArray(dtype=DataType.from_dtype(self.input_dtype))

    def _built_input_shape(self) -> str:
        """The input shape the engine was built for (-1 for a dynamic dimension), as TensorRT reports it."""
        try:
            return "x".join(str(d) for d in self.engine.get_tensor_shape(self.input_name))
        except Exception:  # noqa: BLE001 - only for the message; the refusal stands either way
            return "another shape"

    def peak_device_memory_mb(self):
        """Engine activation memory plus the input buffer edgeseg allocated."""
        if self.engine is None:
            return None
        activations = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine, "device_memory_size", 0)
        return round((int(activations) + int(self.device_input.allocated_nbytes)) / 2 ** 20, 2)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        # False for a shape outside the engine's optimisation profile: said here in edgeseg's words, before
        # Polygraphy would refuse it in its own
        if not self.runner.context.set_input_shape(self.input_name, tuple(batch.shape)):
            raise EdgesegError(self._shape_refusal(batch.shape))
        try:
            self.device_input.resize(tuple(batch.shape))
            self.device_input.copy_from(as_input(batch, self.input_dtype), stream=self.runner.stream)
            # edgeseg checked the shape (the profile) and made the dtype (as_input): no per-call input check
            outputs = self.runner.infer({self.input_name: self.device_input}, check_inputs=False,
                                        copy_outputs_to_host=False)
            self._compute_ms = self.timer.elapsed_ms()
            host = outputs[self.output_name].numpy()
        except self._failures as exc:  # raised after Polygraphy logged TensorRT's own words
            from edgeseg.engine.tensorrt_build import polygraphy_failure

            raise polygraphy_failure(exc, f"TensorRT failed to execute {Path(self.path).name}") from None
        # FP16 logits (an --fp16-io engine) widen to FP32; a class map (uint8 or int32) stays as it is
        return host.astype(np.float32) if host.dtype == np.float16 else host

    def _shape_refusal(self, shape) -> str:
        if not self.meta.get("engine"):  # built elsewhere: its shape is what the user must give
            return (f"{Path(self.path).name} does not take input {tuple(shape)}: it was built for "
                    f"{self._built_input_shape()}; give that size with --input-size HEIGHTxWIDTH.")
        batches = ((self.meta.get("engine") or {}).get("batch") or {})
        return (f"{Path(self.path).name} does not take input {tuple(shape)} (its batch profile is "
                f"{batches.get('min', '?')}:{batches.get('opt', '?')}:{batches.get('max', '?')}); "
                f"rebuild it with edgeseg build-engine --shape MIN:OPT:MAX covering batch {shape[0]}.")

    def _deactivate_impl(self) -> None:
        self._close()

    def _close(self) -> None:
        """Free what activation made, whatever point it reached."""
        runner, device_input, timer = (getattr(self, name, None) for name in ("runner", "device_input", "timer"))
        if runner is not None and runner.is_active:
            runner.deactivate()
        if device_input is not None:
            device_input.free()
        if timer is not None:
            timer.close()
        self.runner = self.device_input = self.timer = self.engine = self.runtime = None


class TimedContext:
    """An IExecutionContext that records the runner's two CUDA events around each ``execute_async_v3``.

    Polygraphy's TrtRunner checks the context's type only when it activates; afterwards it
    calls the context's methods, which this forwards, so the events bracket TensorRT's
    execution and nothing of the Python work around it.
    """

    def __init__(self, context, timer):
        self._context, self._timer = context, timer

    def execute_async_v3(self, stream_handle):
        self._timer.record(0, stream_handle)
        ok = self._context.execute_async_v3(stream_handle)
        self._timer.record(1, stream_handle)
        return ok

    def __getattr__(self, name):
        return getattr(self._context, name)

    def __setattr__(self, name, value):
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:  # a property of the context (device_memory, ...) is set on the context itself
            setattr(self._context, name, value)


def as_input(batch: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The float batch in the engine's input type: FP16 as is, integers (an INT8/UINT8 I/O engine) rounded and clipped.

    An engine built with integer inputs (trtexec --inputIOFormats=int8:chw) takes the values
    as they are scaled for it; edgeseg feeds its normalised image, rounded to that type.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.ascontiguousarray(batch, dtype=dtype)
    if dtype.kind == "b":
        return np.ascontiguousarray(batch != 0)
    limits = np.iinfo(dtype)
    return np.ascontiguousarray(np.clip(np.rint(batch), limits.min, limits.max).astype(dtype))


def numpy_dtype(trt, dtype) -> np.dtype:
    """The numpy dtype of a TensorRT DataType.

    Not ``trt.nptype``: TensorRT 8.5.2's builds its table with ``np.bool``, which numpy 1.24
    removed, so it raises on every call on JetPack 5 (fixed in 8.5.3).
    """
    table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
             "BOOL": np.bool_, "UINT8": np.uint8}
    name = str(dtype).rsplit(".", 1)[-1]
    if name not in table:
        raise EdgesegError(f"The engine has a {name} input or output, which edgeseg's runner does not read; rebuild it "
                           f"from an edgeseg ONNX (FP32 input, FP32 logits or a uint8/int32 class map).")
    return np.dtype(table[name])


def version_compatible_with(built: str, running: str) -> bool:
    """Whether a version-compatible engine built with TensorRT ``built`` runs on ``running``.

    NVIDIA's support matrix: later releases of the same major version, and across majors
    only 8.6+ -> 10.x and 10.x -> 11.x (a TensorRT 8 engine does not run on TensorRT 11).
    """
    old = tuple(int(p) for p in built.split(".")[:3] if p.isdigit())
    new = tuple(int(p) for p in running.split(".")[:3] if p.isdigit())
    if new < old:
        return False
    if old[0] == new[0]:
        return True
    return (old[0], new[0]) in ((8, 10), (10, 11)) and old >= (8, 6)


def engine_mismatch(meta: dict, engine_name: str, trt_version: str, gpu: Optional[dict]) -> Optional[str]:
    """One sentence with the rebuild command when the engine was built for another TensorRT or GPU, else None.

    Version-compatible engines run on the later TensorRT versions ``version_compatible_with``
    allows; no engine runs on a GPU of another compute capability.
    """
    built = meta.get("engine") or {}
    rebuild = built.get("rebuild") or f"edgeseg build-engine {(meta.get('parent') or {}).get('artifact', 'MODEL.onnx')}"
    built_trt = built.get("tensorrt")
    compatible = (built.get("plan") or {}).get("version_compatible")
    if built_trt and built_trt != trt_version:
        if not (compatible and version_compatible_with(built_trt, trt_version)):
            return (f"{engine_name} was built with TensorRT {built_trt} but this machine has {trt_version}; "
                    f"rebuild it here: {rebuild}")
    built_gpu = built.get("gpu") or {}
    if gpu and built_gpu.get("compute_capability") and built_gpu["compute_capability"] != gpu.get("compute_capability"):
        return (f"{engine_name} was built for {built_gpu.get('name')} (compute capability "
                f"{built_gpu['compute_capability']}) but this GPU is {gpu.get('name')} "
                f"({gpu.get('compute_capability')}); rebuild it here: {rebuild}")
    return None
