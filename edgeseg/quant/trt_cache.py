"""TensorRT's calibration cache, written from edgeseg's ranges (implicit INT8 on JetPack 5/6 and DLA).

Format: first line ``TRT-<version>-<Algorithm>``, then one ``tensor: <hex>`` line per
tensor, where <hex> is the big-endian IEEE float32 of scale = amax / 127. Tensor names
are the ONNX tensor names, which TensorRT's ONNX parser keeps for network tensors.

<version> is the NV_TENSORRT_VERSION of the TensorRT that reads the cache, and TensorRT
ignores a cache headed with another one (it then asks the calibrator for images, which
edgeseg's cache-only calibrator does not have). So every cache handed to a TensorRT,
by the builder or on a trtexec line, is re-headed for that version first
(``for_tensorrt``).
"""
from __future__ import annotations

import struct
from typing import Dict

CACHE_ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration",
                    "percentile": "EntropyCalibration2", "mse": "EntropyCalibration2",
                    "auto": "EntropyCalibration2"}
# calibrate heads its cache for JetPack 5's TensorRT (the generation that uses caches most);
# build-engine and --print-trtexec re-head it for the TensorRT they target
DEFAULT_TRT_VERSION = "8.5.2"


def tensorrt_version_code(trt_version: str) -> int:
    """NV_TENSORRT_VERSION for a version string: 8.5.2 -> 8502, 10.3.0 -> 100300.

    NvInferVersion.h defines it as major*1000 + minor*100 + patch up to 8.x and as
    major*10000 + minor*100 + patch from 10.0 on (NvInferRuntimeBase.h).
    """
    parts = [int(p) for p in (trt_version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def format_cache(amax: Dict[str, float], method: str, trt_version: str = DEFAULT_TRT_VERSION) -> str:
    lines = [f"TRT-{tensorrt_version_code(trt_version)}-{CACHE_ALGORITHMS[method]}"]
    for name, value in amax.items():
        scale = max(float(value), 1e-12) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


# the calibrator that reads edgeseg's caches: trtexec's (--calib) and Polygraphy's default are both
# IInt8EntropyCalibrator2, and TensorRT ignores a cache headed for another calibrator (trtexec then calibrates
# on random data, silently)
READING_CALIBRATOR = "EntropyCalibration2"


def for_tensorrt(text: str, trt_version: str) -> str:
    """The same scales headed for TensorRT ``trt_version`` and for IInt8EntropyCalibrator2.

    The header names the calibrator class that reads the cache, not how the ranges were
    found: TensorRT takes the scales as they are from a cache whose header matches, so a
    minmax- or percentile-calibrated cache is headed EntropyCalibration2 for the reader.
    """
    body = text.partition("\n")[2]
    return f"TRT-{tensorrt_version_code(trt_version)}-{READING_CALIBRATOR}\n{body}"


def parse_cache(text: str) -> Dict[str, float]:
    """Inverse of ``format_cache``: {tensor: scale}."""
    scales = {}
    for line in text.splitlines()[1:]:
        if ":" in line:
            name, value = line.rsplit(":", 1)
            scales[name.strip()] = struct.unpack(">f", bytes.fromhex(value.strip()))[0]
    return scales
