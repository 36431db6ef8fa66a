"""TensorRT runner: the tensor API of TensorRT 10/11, the bindings API of TensorRT 8.5 (JetPack 5).

Device buffers, pinned host buffers, the stream and timing events come from
cuda-python or pycuda (``cuda_api``); copies are asynchronous on one stream and the
stream is synchronised before the output is read. An engine is executable code to
NVIDIA, so an engine whose sha256 differs from its sidecar is refused unless the user
says ``--trust-engine``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgeseg.errors import EdgesegError, MissingDependencyError, UntrustedFileError
from edgeseg.fileio import sha256_of
from edgeseg.runtime.base import Runner


class TensorRTRunner(Runner):
    """Engine execution with pinned host buffers, so the copies really are asynchronous DMA transfers.

    Outputs rotate through ``OUTPUT_RING`` pinned buffers (the same contract as the
    ONNX Runtime runner: a returned array stays valid for the next ring-size-minus-one calls,
    and only while the runner is active: deactivating frees the pinned memory, so copy what
    you keep past the ``with`` block).
    """

    backend = "tensorrt"
    OUTPUT_RING = 8

    def __init__(self, path: str, input_shape, precision: str, device: str, meta: dict, trust_engine: bool = False,
                 allow_host_code: bool = False):
        super().__init__(path, input_shape, precision, device)
        self.meta, self.trust_engine, self.allow_host_code = meta, trust_engine, allow_host_code
        self.engine = None

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
        from edgeseg.runtime.cuda_api import load_cuda_api

        self.trt, self.cuda = trt, load_cuda_api()
        problem = engine_mismatch(self.meta, Path(self.path).name, trt.__version__, self.cuda.device_info())
        if problem:
            raise EdgesegError(problem)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if hasattr(self.runtime, "engine_host_code_allowed"):  # TensorRT >= 8.6; off unless the user opted in
            self.runtime.engine_host_code_allowed = bool(self.allow_host_code)
        dla = (built.get("dla") or {}).get("core")
        if dla is not None:  # the runtime's DLA core is -1 unless set, as trtexec sets it before deserialising
            self.runtime.DLA_core = int(dla)
        self.engine = self.runtime.deserialize_cuda_engine(Path(self.path).read_bytes())
        if self.engine is None:
            raise EdgesegError(f"TensorRT could not load {self.path}; it was built for another GPU or TensorRT.")
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        # events around the execution alone give the compute time; host time adds the copies
        self.events = (self.cuda.event(), self.cuda.event())
        self.tensor_api = hasattr(self.engine, "num_io_tensors")  # TensorRT >= 8.5 has it; 10+ has only it
        self.buffers = {}  # name -> (device pointer, bytes)
        self.pinned = {}  # key -> (handle, numpy view)
        self.turn = 0
        # engine I/O names and dtypes never change: look them up once, not on every inference
        io = self._io()
        self.input_name, self.input_dtype = next((n, d) for n, is_input, d in io if is_input)
        self.output_name, self.output_dtype = next((n, d) for n, is_input, d in io if not is_input)

    def _io(self):
        """[(name, is_input, numpy dtype)] in engine order."""
        trt = self.trt
        if self.tensor_api:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            return [(n, self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                     numpy_dtype(trt, self.engine.get_tensor_dtype(n))) for n in names]
        return [(self.engine.get_binding_name(i), self.engine.binding_is_input(i),
                 numpy_dtype(trt, self.engine.get_binding_dtype(i))) for i in range(self.engine.num_bindings)]

    def _built_input_shape(self) -> str:
        """The input shape the engine was built for (-1 for a dynamic dimension), as TensorRT reports it."""
        try:
            dims = (self.engine.get_tensor_shape(self.input_name) if self.tensor_api
                    else self.engine.get_binding_shape(0))
            return "x".join(str(d) for d in dims)
        except Exception:  # noqa: BLE001 - only for the message; the refusal stands either way
            return "another shape"

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (None, 0))
        if size < nbytes:  # grow only: no reallocation per call at a steady batch size
            if pointer is not None:
                self.cuda.free(pointer)
            pointer = self.cuda.malloc(nbytes)
            self.buffers[name] = (pointer, nbytes)
        return pointer

    def _pinned(self, key: str, shape: tuple, dtype) -> np.ndarray:
        """A page-locked host array, reused while its shape stays the same."""
        entry = self.pinned.get(key)
        if entry is not None and entry[1].shape == shape and entry[1].dtype == dtype:
            return entry[1]
        if entry is not None:
            self.cuda.free_pinned(entry[0])
        self.pinned[key] = self.cuda.pinned(shape, dtype)
        return self.pinned[key][1]

    def peak_device_memory_mb(self):
        """Engine activation memory plus the I/O buffers edgeseg allocated."""
        if self.engine is None:
            return None
        activations = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine, "device_memory_size", 0)
        return round((int(activations) + sum(size for _, size in self.buffers.values())) / 2 ** 20, 2)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        cuda, stream = self.cuda, self.stream
        input_name, input_dtype = self.input_name, self.input_dtype
        output_name, output_dtype = self.output_name, self.output_dtype
        # both calls return False for a shape outside the engine's optimisation profile
        accepted = (self.context.set_input_shape(input_name, batch.shape) if self.tensor_api
                    else self.context.set_binding_shape(0, batch.shape))
        if not accepted and not self.meta.get("engine"):  # built elsewhere: its shape is what the user must give
            raise EdgesegError(f"{Path(self.path).name} does not take input {tuple(batch.shape)}: it was built for "
                               f"{self._built_input_shape()}; give that size with --input-size HEIGHTxWIDTH.")
        if not accepted:
            batches = ((self.meta.get("engine") or {}).get("batch") or {})
            raise EdgesegError(f"{Path(self.path).name} does not take input {tuple(batch.shape)} (its batch profile is "
                               f"{batches.get('min', '?')}:{batches.get('opt', '?')}:{batches.get('max', '?')}); "
                               f"rebuild it with edgeseg build-engine --shape MIN:OPT:MAX covering batch {batch.shape[0]}.")
        out_shape = tuple(self.context.get_tensor_shape(output_name) if self.tensor_api
                          else self.context.get_binding_shape(1))
        host_in = self._pinned("input", tuple(batch.shape), input_dtype)
        np.copyto(host_in, batch, casting="same_kind")
        self.turn = (self.turn + 1) % self.OUTPUT_RING
        host_out = self._pinned(f"output{self.turn}", out_shape, output_dtype)
        d_in = self._device_buffer(input_name, host_in.nbytes)
        d_out = self._device_buffer(output_name, host_out.nbytes)
        cuda.to_device(d_in, host_in, stream)
        cuda.record(self.events[0], stream)
        if self.tensor_api:
            self.context.set_tensor_address(input_name, int(d_in))
            self.context.set_tensor_address(output_name, int(d_out))
            ok = self.context.execute_async_v3(cuda.stream_handle(stream))
        else:
            ok = self.context.execute_async_v2([int(d_in), int(d_out)], cuda.stream_handle(stream))
        cuda.record(self.events[1], stream)
        if not ok:
            raise EdgesegError(f"TensorRT failed to execute {self.path}.")
        cuda.to_host(host_out, d_out, stream)
        cuda.synchronize(stream)
        self._compute_ms = cuda.elapsed_ms(self.events[0], self.events[1])
        # FP16 logits (an --fp16-io engine) widen to FP32; a class map (uint8 or int32) stays as it is
        return host_out.astype(np.float32) if host_out.dtype == np.float16 else host_out

    def _deactivate_impl(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cuda.free(pointer)
        for handle, _ in self.pinned.values():
            self.cuda.free_pinned(handle)
        self.buffers, self.pinned = {}, {}
        self.cuda.close(self.stream, self.events)
        self.context = self.engine = self.runtime = None


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
