"""``edgeseg info`` without an artifact: what this machine can run, in the terms a Jetson user checks first."""
from __future__ import annotations

import importlib.util
import json
import platform
from pathlib import Path
from typing import Dict, Optional

from edgeseg.console import out


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def l4t_release() -> Optional[str]:
    """'36.4.0' from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.0, ...'), None off Jetson."""
    text = _read("/etc/nv_tegra_release")
    if not text or not text.startswith("# R"):
        return None
    major = text[3:].split(" ", 1)[0]
    revision = text.split("REVISION:", 1)[1].split(",", 1)[0].strip() if "REVISION:" in text else "0"
    return f"{major}.{revision}"


def device_report() -> Dict[str, object]:
    from edgeseg import __version__
    from edgeseg.engine.api import tensorrt_available
    from edgeseg.runtime.native import BACKEND

    report: Dict[str, object] = {"edgeseg": __version__, "python": platform.python_version(),
                                 "machine": platform.machine(), "board": _read("/proc/device-tree/model"),
                                 "l4t": l4t_release(), "host_kernels": BACKEND}
    has_trt, trt = tensorrt_available()
    report["tensorrt"] = trt if has_trt else f"unavailable ({trt})"
    if has_trt:
        from edgeseg.engine.tensorrt_build import gpu_identity

        report["gpu"] = gpu_identity()
    try:
        import onnxruntime as ort

        report["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError:
        report["onnxruntime"] = None
    report["torch"] = None
    if importlib.util.find_spec("torch") is not None:  # optional on the deploy side
        try:
            import torch

            report["torch"] = {"version": torch.__version__, "cuda": torch.cuda.is_available()}
        except ImportError:
            pass
    return report


def print_device_report(as_json: bool = False) -> Dict[str, object]:
    report = device_report()
    if as_json:
        out.print_json(json.dumps(report))
        return report
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        out.print(f"  {key:<13} {value if value is not None else '-'}")
    return report
