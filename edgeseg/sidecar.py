"""Sidecar JSON next to every artifact: what made it, so the next stage need not ask.

``model.onnx`` gets ``model.onnx.json`` holding the input spec, the dataset's classes,
the precision, the parent artifact and the sha256 of the file itself. Stages read the
sidecar of their input and extend it for their output.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edgeseg import __version__
from edgeseg.errors import InputFileError
from edgeseg.fileio import sha256_of, write_json_atomic
from edgeseg.spec import DatasetInfo, InputSpec


def sidecar_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def read_sidecar(artifact: str | os.PathLike, required: bool = False) -> Dict[str, Any]:
    """Return the sidecar of ``artifact`` as a dict ({} when absent and not required)."""
    path = sidecar_path(artifact)
    if not path.exists():
        if required:
            raise InputFileError(
                f"{artifact} has no sidecar {path.name}; recreate the artifact with edgeseg so its input size and classes are known.")
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"Sidecar {path} is not valid JSON ({exc.msg}); delete it and recreate the artifact.") from exc


def _library_versions() -> Dict[str, str]:
    versions = {"edgeseg": __version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "torchvision", "onnx", "onnxruntime", "torch_pruning", "tensorrt"):
        module = sys.modules.get(name)  # only what this process actually used
        if module is not None and hasattr(module, "__version__"):
            versions[name] = str(module.__version__)
    return versions


def write_sidecar(artifact: str | os.PathLike, kind: str, *, input_spec: Optional[InputSpec],
                  dataset: Optional[DatasetInfo], parent: Optional[str | os.PathLike] = None,
                  **sections: Any) -> Dict[str, Any]:
    """Write ``<artifact>.json`` after the artifact itself is complete; return what was written."""
    artifact = Path(artifact)
    data: Dict[str, Any] = {
        "artifact": artifact.name,
        "kind": kind,
        "sha256": sha256_of(artifact),
        "size_mb": round(artifact.stat().st_size / 1e6, 4),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _library_versions(),
        "input": input_spec.to_dict() if input_spec else None,
        "dataset": dataset.to_dict() if dataset else None,
    }
    if parent is not None:
        parent = Path(parent)
        data["parent"] = {"artifact": parent.name, "sha256": read_sidecar(parent).get("sha256")}
    data.update({k: v for k, v in sections.items() if v is not None})
    write_json_atomic(sidecar_path(artifact), data)
    return data


def spec_from_sidecar(meta: Dict[str, Any]) -> Tuple[Optional[InputSpec], Optional[DatasetInfo]]:
    spec = InputSpec.from_dict(meta["input"]) if meta.get("input") else None
    info = DatasetInfo.from_dict(meta["dataset"]) if meta.get("dataset") else None
    return spec, info


def model_output(meta: Dict[str, Any]) -> Dict[str, str]:
    """What a model's output is: ``{"kind": "logits" | "class_map", "dtype": ...}`` (logits when unsaid).

    ``export --argmax`` records it in the ``onnx`` section, which calibrate and
    build-engine copy to their artifacts, so a Q/DQ model and an engine say it too.
    """
    onnx = meta.get("onnx") or {}
    return {"kind": str(onnx.get("output_kind", "logits")), "dtype": str(onnx.get("output_dtype", "float32"))}
