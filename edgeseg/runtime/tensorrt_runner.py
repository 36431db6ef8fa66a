"""TensorRT runner: the tensor API of TensorRT 10/11, the bindings API of TensorRT 8.5 (JetPack 5).

Device buffers and the stream come from cuda-python's runtime bindings; copies are
asynchronous on one stream and the stream is synchronised before the output is read.
An engine is executable code to NVIDIA, so an engine whose sha256 differs from its
sidecar is refused unless the user says ``--trust-engine``.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError, MissingDependencyError, UntrustedFileError
from edgeseg.fileio import sha256_of
from edgeseg.runtime.base import Runner


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise MissingDependencyError("cuda-python is not installed; pip install 'edgeseg[trt]' to run engines.") from exc
    return cudart


def _check(result):
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EdgesegError(f"CUDA call failed with error {err}; check the GPU driver and that no other process "
                           f"holds the device.")
    return values[0] if len(values) == 1 else values


class TensorRTRunner(Runner):
    """Engine execution with pinned host buffers, so the copies really are asynchronous DMA transfers.

    Outputs rotate through ``OUTPUT_RING`` pinned buffers (the same contract as the
    ONNX Runtime runner: a returned array stays valid for the next ring-size-minus-one calls).
    """

    backend = "tensorrt"
    OUTPUT_RING = 8

    def __init__(self, path: str, input_shape, precision: str, device: str, meta: dict, trust_engine: bool = False):
        super().__init__(path, input_shape, precision, device)
        self.meta, self.trust_engine = meta, trust_engine

    def _activate_impl(self) -> None:
        # the trust check comes first: it must hold whether or not TensorRT is installed
        expected = self.meta.get("sha256")
        if not self.trust_engine and expected != sha256_of(self.path):
            raise UntrustedFileError(f"{self.path} does not match the sha256 in its sidecar (or has none); an engine "
                                     f"is executable code, so rebuild it or pass --trust-engine if you made it.")
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingDependencyError("TensorRT is not installed; engines run only where TensorRT is (ONNX files "
                                         "run everywhere with ONNX Runtime).") from exc
        built = (self.meta.get("engine") or {}).get("tensorrt")
        if built and built != trt.__version__:
            raise EdgesegError(f"{Path(self.path).name} was built with TensorRT {built} but this machine has "
                               f"{trt.__version__}; rebuild it: edgeseg build-engine {self.meta.get('parent', {}).get('artifact', 'MODEL.onnx')}.")
        self.trt, self.cudart = trt, _cudart()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(self.path).read_bytes())
        if self.engine is None:
            raise EdgesegError(f"TensorRT could not load {self.path}; it was built for another GPU or TensorRT.")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        # events around the execution alone give the compute time; host time adds the copies
        self.events = (_check(self.cudart.cudaEventCreate()), _check(self.cudart.cudaEventCreate()))
        self.tensor_api = hasattr(self.engine, "num_io_tensors")  # TensorRT >= 8.5 has it; 10+ has only it
        self.buffers = {}
        self.pinned = {}  # key -> (pointer, numpy view)
        self.turn = 0

    def _io(self):
        """[(name, is_input, numpy dtype)] in engine order."""
        trt = self.trt
        if self.tensor_api:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            return [(n, self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                     trt.nptype(self.engine.get_tensor_dtype(n))) for n in names]
        return [(self.engine.get_binding_name(i), self.engine.binding_is_input(i),
                 trt.nptype(self.engine.get_binding_dtype(i))) for i in range(self.engine.num_bindings)]

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (None, 0))
        if size < nbytes:  # grow only: no reallocation per call at a steady batch size
            if pointer is not None:
                _check(self.cudart.cudaFree(pointer))
            pointer = _check(self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (pointer, nbytes)
        return pointer

    def _pinned(self, key: str, shape: tuple, dtype) -> np.ndarray:
        """A page-locked host array (cudaMallocHost), reused while its shape stays the same."""
        entry = self.pinned.get(key)
        if entry is not None and entry[1].shape == shape and entry[1].dtype == dtype:
            return entry[1]
        if entry is not None:
            _check(self.cudart.cudaFreeHost(entry[0]))
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pointer = _check(self.cudart.cudaMallocHost(nbytes))
        raw = (ctypes.c_byte * nbytes).from_address(int(pointer))
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        self.pinned[key] = (pointer, array)
        return array

    def peak_device_memory_mb(self):
        """Engine activation memory plus the I/O buffers edgeseg allocated."""
        if getattr(self, "engine", None) is None:
            return None
        activations = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine, "device_memory_size", 0)
        return round((int(activations) + sum(size for _, size in self.buffers.values())) / 2 ** 20, 2)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        io = self._io()
        input_name = next(n for n, is_input, _ in io if is_input)
        output_name, output_dtype = next((n, d) for n, is_input, d in io if not is_input)
        if self.tensor_api:
            self.context.set_input_shape(input_name, batch.shape)
            out_shape = tuple(self.context.get_tensor_shape(output_name))
        else:
            self.context.set_binding_shape(0, batch.shape)
            out_shape = tuple(self.context.get_binding_shape(1))
        host_in = self._pinned("input", tuple(batch.shape), next(d for n, i, d in io if i))
        np.copyto(host_in, batch, casting="same_kind")
        self.turn = (self.turn + 1) % self.OUTPUT_RING
        host_out = self._pinned(f"output{self.turn}", out_shape, output_dtype)
        d_in = self._device_buffer(input_name, host_in.nbytes)
        d_out = self._device_buffer(output_name, host_out.nbytes)
        kind = cudart.cudaMemcpyKind
        _check(cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, kind.cudaMemcpyHostToDevice,
                                      self.stream))
        _check(cudart.cudaEventRecord(self.events[0], self.stream))
        if self.tensor_api:
            self.context.set_tensor_address(input_name, d_in)
            self.context.set_tensor_address(output_name, d_out)
            ok = self.context.execute_async_v3(self.stream)
        else:
            ok = self.context.execute_async_v2([d_in, d_out], self.stream)
        _check(cudart.cudaEventRecord(self.events[1], self.stream))
        if not ok:
            raise EdgesegError(f"TensorRT failed to execute {self.path}.")
        _check(cudart.cudaMemcpyAsync(host_out.ctypes.data, d_out, host_out.nbytes, kind.cudaMemcpyDeviceToHost,
                                      self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        self._compute_ms = float(_check(cudart.cudaEventElapsedTime(self.events[0], self.events[1])))
        return host_out if host_out.dtype == np.float32 else host_out.astype(np.float32)

    def _deactivate_impl(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        for pointer, _ in self.pinned.values():
            self.cudart.cudaFreeHost(pointer)
        self.buffers, self.pinned = {}, {}
        for event in self.events:
            self.cudart.cudaEventDestroy(event)
        self.cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = self.runtime = None
