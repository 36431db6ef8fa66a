"""Whether ONNX Runtime's INT8 kernels on this CPU can saturate, and the sentence that says so.

With ``--quantize-outputs`` ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear
into an integer kernel (QLinearConv, QGemm). On x86 without VNNI (AVX2 or AVX-512 without
the VNNI extension) MLAS multiplies uint8 activations by int8 weights with VPMADDUBSW, which
adds each pair of products into a saturating int16: 2 x 255 x 127 = 64770 does not fit, so
large activations clip (ONNX Runtime's quantization guide: "When and why do I need to try
U8U8?"). Measured (benchmarks/results/qat_vs_ptq.md): the CamVid benchmark's pruned student
with --quantize-outputs loses 7.57 mIoU through the fused kernels on an AVX2 EPYC and 0.61
when the same Q/DQ model runs as written (graph optimisations off). CPUs with AVX512-VNNI,
AVX-VNNI or AMX, ARM and GPUs are not affected. The default layout (Q/DQ on op inputs only)
mostly runs as float convolutions; only where a quantised op feeds another (QLinearConv,
QLinearMatMul) does it fuse (benchmarks/results/qat_families.md gives both figures for every
family it has measured).
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Iterable, Optional

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> Optional[set]:
    """The flags of the first CPU in /proc/cpuinfo; None where that cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def saturating_kernels(flags: Optional[Iterable[str]], machine: Optional[str] = None) -> bool:
    """True for an x86 CPU whose flags are known and include none of VNNI_FLAGS."""
    machine = (machine or platform.machine()).lower()
    if flags is None or machine not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not set(flags) & set(VNNI_FLAGS)


def outputs_layout_warning(flags: Optional[Iterable[str]] = None, machine: Optional[str] = None) -> Optional[str]:
    """One sentence for --quantize-outputs on a CPU whose ONNX Runtime INT8 kernels saturate; None elsewhere."""
    flags = cpu_flags() if flags is None else flags
    if not saturating_kernels(flags, machine):
        return None
    return ("This CPU has no VNNI (AVX512-VNNI, AVX-VNNI or AMX): ONNX Runtime runs a --quantize-outputs model "
            "through integer kernels whose int16 sums saturate here, which can cost several mIoU points that the "
            "same model keeps on a VNNI CPU, ARM or a GPU; measure it with edgeseg eval on the CPU you deploy to, "
            "or keep the default layout (Q/DQ on op inputs), which ONNX Runtime runs mostly as float convolutions.")
