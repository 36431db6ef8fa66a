"""The handful of CUDA calls the TensorRT runner needs, from cuda-python or, failing that, pycuda.

Both expose the same small surface: device buffers, pinned host arrays, one stream,
asynchronous copies and timing events. cuda-python is preferred (NVIDIA's own bindings,
on PyPI for every platform); pycuda is what many JetPack images already ship.
"""
from __future__ import annotations

import ctypes
from typing import Tuple

import numpy as np

from edgeseg.errors import EdgesegError, MissingDependencyError


class CudaPython:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""

    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # raises ImportError when cuda-python is absent
        self.cudart = cudart

    def _check(self, result):
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise EdgesegError(f"CUDA call failed with error {err}; check the GPU driver and that no other process "
                               f"holds the device.")
        return values[0] if len(values) == 1 else values

    def stream(self):
        return self._check(self.cudart.cudaStreamCreate())

    def device_info(self) -> dict:
        props = self._check(self.cudart.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}

    def stream_handle(self, stream) -> int:
        return int(stream)

    def malloc(self, nbytes: int) -> int:
        return self._check(self.cudart.cudaMalloc(nbytes))

    def free(self, pointer) -> None:
        self.cudart.cudaFree(pointer)

    def pinned(self, shape: Tuple[int, ...], dtype) -> Tuple[object, np.ndarray]:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pointer = self._check(self.cudart.cudaMallocHost(nbytes))
        raw = (ctypes.c_byte * nbytes).from_address(int(pointer))
        return pointer, np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free_pinned(self, handle) -> None:
        self.cudart.cudaFreeHost(handle)

    def to_device(self, pointer, host: np.ndarray, stream) -> None:
        self._check(self.cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def to_host(self, host: np.ndarray, pointer, stream) -> None:
        self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def synchronize(self, stream) -> None:
        self._check(self.cudart.cudaStreamSynchronize(stream))

    def event(self):
        return self._check(self.cudart.cudaEventCreate())

    def record(self, event, stream) -> None:
        self._check(self.cudart.cudaEventRecord(event, stream))

    def elapsed_ms(self, start, end) -> float:
        return float(self._check(self.cudart.cudaEventElapsedTime(start, end)))

    def close(self, stream, events) -> None:
        for event in events:
            self.cudart.cudaEventDestroy(event)
        self.cudart.cudaStreamDestroy(stream)


class PyCuda:
    """pycuda, on the device's primary context (the one TensorRT's runtime API uses)."""

    name = "pycuda"

    def __init__(self):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.context = cuda.Device(0).retain_primary_context()
        self.context.push()
        self.allocations = {}

    def stream(self):
        return self.cuda.Stream()

    def device_info(self) -> dict:
        device = self.cuda.Device(0)
        return {"name": device.name(), "compute_capability": "{}.{}".format(*device.compute_capability())}

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def malloc(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(nbytes)
        self.allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, pointer) -> None:
        self.allocations.pop(int(pointer)).free()

    def pinned(self, shape, dtype):
        array = self.cuda.pagelocked_empty(shape, dtype)
        return array, array

    def free_pinned(self, handle) -> None:
        handle.base.free()

    def to_device(self, pointer, host, stream) -> None:
        self.cuda.memcpy_htod_async(int(pointer), host, stream)

    def to_host(self, host, pointer, stream) -> None:
        self.cuda.memcpy_dtoh_async(host, int(pointer), stream)

    def synchronize(self, stream) -> None:
        stream.synchronize()

    def event(self):
        return self.cuda.Event()

    def record(self, event, stream) -> None:
        event.record(stream)

    def elapsed_ms(self, start, end) -> float:
        return float(end.time_since(start))

    def close(self, stream, events) -> None:
        self.context.pop()


def load_cuda_api():
    """cuda-python if installed, else pycuda, else one sentence saying what to install."""
    for backend in (CudaPython, PyCuda):
        try:
            return backend()
        except ImportError:
            continue
    raise MissingDependencyError("Running a TensorRT engine needs cuda-python (pip install 'edgeseg[trt]') or pycuda; "
                                 "neither is installed.")
