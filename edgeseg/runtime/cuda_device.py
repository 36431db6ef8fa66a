"""The CUDA facts Polygraphy's CUDA wrapper does not give: which GPU this is, its free memory, event timing.

Polygraphy loads the system's ``libcudart`` with ctypes (``polygraphy.cuda.wrapper()``),
so it always matches the device's driver; cuda-python 12.9 links its runtime statically
and fails against JetPack 6's 12.6 driver (Jetson has no minor-version compatibility).
Its wrapper covers streams, memory and copies but not device attributes or events, so
these few calls go through the same ``libcudart`` handle.
"""
from __future__ import annotations

import ctypes
from typing import Optional

# cudaDeviceAttr values (cuda_runtime_api.h, unchanged since CUDA 5)
_COMPUTE_CAPABILITY_MAJOR, _COMPUTE_CAPABILITY_MINOR = 75, 76


def _cudart():
    from polygraphy import cuda

    plain_polygraphy_log()
    return cuda.wrapper()


def plain_polygraphy_log() -> None:
    """Polygraphy's log without colours: it would warn, once per process, that the 'colored' module is missing."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.colors = False


def quiet():
    """Polygraphy prints a failed CUDA call ("[!] CUDA Error: 35") before raising; edgeseg says it in its own words."""
    from polygraphy.logger import G_LOGGER

    return G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1)


def device_info(device: int = 0) -> dict:
    """{"name", "compute_capability"} of a CUDA device, as the sidecar records the GPU an engine was built on."""
    wrapper = _cudart()
    major, minor = ctypes.c_int(), ctypes.c_int()
    with quiet():
        wrapper.check(wrapper.handle.cudaDeviceGetAttribute(ctypes.byref(major), _COMPUTE_CAPABILITY_MAJOR, device))
        wrapper.check(wrapper.handle.cudaDeviceGetAttribute(ctypes.byref(minor), _COMPUTE_CAPABILITY_MINOR, device))
    # cudaDeviceProp begins with char name[256] in every CUDA release; the buffer is larger than any release's struct.
    # CUDA 12 keeps the bare symbol for the CUDA 11 layout and names the current one _v2 (13: the bare name again)
    get_properties = getattr(wrapper.handle, "cudaGetDeviceProperties_v2", None) or \
        wrapper.handle.cudaGetDeviceProperties
    props = ctypes.create_string_buffer(16384)
    with quiet():
        wrapper.check(get_properties(props, device))
    name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
    return {"name": name, "compute_capability": f"{major.value}.{minor.value}"}


def free_bytes() -> int:
    """The GPU's free memory (cudaMemGetInfo), device-wide."""
    wrapper = _cudart()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    with quiet():
        wrapper.check(wrapper.handle.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)))
    return int(free.value)


class EventTimer:
    """Two CUDA events around work on a stream: the device time between them, in milliseconds."""

    def __init__(self):
        self.wrapper = _cudart()
        self.events = [ctypes.c_void_p(), ctypes.c_void_p()]
        with quiet():
            for event in self.events:
                self.wrapper.check(self.wrapper.handle.cudaEventCreate(ctypes.byref(event)))

    def record(self, index: int, stream_ptr: int) -> None:
        with quiet():
            self.wrapper.check(self.wrapper.handle.cudaEventRecord(self.events[index], ctypes.c_void_p(stream_ptr)))

    def elapsed_ms(self) -> Optional[float]:
        ms = ctypes.c_float()
        with quiet():
            self.wrapper.check(self.wrapper.handle.cudaEventSynchronize(self.events[1]))
            self.wrapper.check(self.wrapper.handle.cudaEventElapsedTime(ctypes.byref(ms), self.events[0],
                                                                        self.events[1]))
        return float(ms.value)

    def close(self) -> None:
        for event in self.events:
            if event.value:
                self.wrapper.handle.cudaEventDestroy(event)
        self.events = [ctypes.c_void_p(), ctypes.c_void_p()]
