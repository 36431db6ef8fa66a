"""TensorRT's calibration cache, written from edgeseg's ranges (implicit INT8 on JetPack 5/6 and DLA).

Format: first line ``TRT-<version>-<Algorithm>``, then one ``tensor: <hex>`` line per
tensor, where <hex> is the big-endian IEEE float32 of scale = amax / 127. Tensor names
are the ONNX tensor names, which TensorRT's ONNX parser keeps for network tensors.
"""
from __future__ import annotations

import struct
from typing import Dict

CACHE_ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration",
                    "percentile": "EntropyCalibration2", "mse": "EntropyCalibration2",
                    "auto": "EntropyCalibration2"}
DEFAULT_TRT_VERSION = "8601"  # build-engine rewrites the header to the TensorRT version of the device


def format_cache(amax: Dict[str, float], method: str, trt_version: str = DEFAULT_TRT_VERSION) -> str:
    lines = [f"TRT-{trt_version}-{CACHE_ALGORITHMS[method]}"]
    for name, value in amax.items():
        scale = max(float(value), 1e-12) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> Dict[str, float]:
    """Inverse of ``format_cache``: {tensor: scale}."""
    scales = {}
    for line in text.splitlines()[1:]:
        if ":" in line:
            name, value = line.rsplit(":", 1)
            scales[name.strip()] = struct.unpack(">f", bytes.fromhex(value.strip()))[0]
    return scales
