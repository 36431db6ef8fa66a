"""Pick the runner for an artifact from its file type, with what its sidecar says about it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgeseg.errors import InputFileError, option
from edgeseg.fileio import require_file
from edgeseg.runtime.base import Runner
from edgeseg.sidecar import read_sidecar, spec_from_sidecar
from edgeseg.spec import DatasetInfo, InputSpec, ModelFacts

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".pt2", ".safetensors", ".bin")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass
class Artifact:
    """An artifact on disk and what is known about it before running it."""

    path: Path
    backend: str
    input_spec: InputSpec
    dataset: Optional[DatasetInfo]
    precision: str
    meta: dict
    facts: Optional[ModelFacts] = None  # what the user said of a model file made elsewhere (the runner reads it too)


def backend_of(path: str | Path) -> str:
    """The runtime a file's type calls for: pytorch, onnxruntime or tensorrt (without opening it).

    A Hugging Face model folder (or a hub-cache id) runs in PyTorch.
    """
    from edgeseg.huggingface import find_folder

    if find_folder(path) is not None:
        return "pytorch"
    suffix = Path(path).suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "pytorch"
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if Path(path).is_dir():
        raise InputFileError(f"{path} is a folder but not a Hugging Face model folder (no config.json); give a model "
                             f"file (.pt, .onnx, .engine) or a save_pretrained folder.")
    raise InputFileError(f"{path} has an unknown type '{suffix}'; edgeseg runs .pt, .onnx and .engine files and "
                         f"Hugging Face model folders.")


def describe(path: str | Path, trust_checkpoint: bool = False, facts: Optional[ModelFacts] = None) -> Artifact:
    """What is known about the artifact at ``path``: its sidecar, or for a file made elsewhere, what ``facts`` add."""
    backend = backend_of(path)
    if backend == "pytorch" and not Path(path).is_file():
        from edgeseg.huggingface import find_folder

        folder = find_folder(path)
        if folder is not None:  # a Hugging Face folder: its config is its sidecar
            return _describe_loaded(folder, {}, trust_checkpoint, facts)
    path = require_file(path, "Artifact")
    meta = read_sidecar(path)
    spec, info = spec_from_sidecar(meta)
    if backend == "pytorch":
        if spec is None:  # a checkpoint carries its own input spec; the sidecar is optional here
            return _describe_loaded(path, meta, trust_checkpoint, facts)
    elif backend == "onnxruntime":
        if not meta:  # exported by another tool: its graph and the user's facts say what a sidecar would
            from edgeseg.foreign_onnx import onnx_meta

            meta = onnx_meta(path, meta, facts)
            spec, info = spec_from_sidecar(meta)
    elif not meta:  # an engine built by another tool (trtexec): the user's facts say what a sidecar would
        meta = foreign_engine_meta(path, facts)
        spec, info = spec_from_sidecar(meta)
    if spec is None:
        raise InputFileError(f"{path} has no sidecar {path.name}.json saying its input size; create the artifact with "
                             f"edgeseg (or copy its .json next to it).")
    return Artifact(path, backend, spec, info, meta.get("precision", "fp32"), meta, facts)


def _describe_loaded(path: Path, meta: dict, trust_checkpoint: bool, facts: Optional[ModelFacts]) -> Artifact:
    """A PyTorch model whose file (checkpoint, Hugging Face folder, or a state_dict with ``facts``) says what it is.

    The runner loads the file again with the same ``facts``: a model made elsewhere runs
    in PyTorch as its export would, with nothing written next to the user's file.
    """
    try:
        from edgeseg.checkpoint import load_model
    except ImportError:  # the deploy side runs without torch; a PyTorch model does not
        from edgeseg.errors import MissingDependencyError

        raise MissingDependencyError(f"{path} is a PyTorch model (a checkpoint or a Hugging Face folder), which runs "
                                     f"with torch, and torch is not installed here: pip install torch (and "
                                     f"'edgeseg[hf]' for a folder), or run its ONNX export instead.") from None
    loaded = load_model(path, trust_checkpoint=trust_checkpoint, facts=facts)
    if loaded.input_spec is None:
        raise InputFileError(f"{path} does not say its input size; give it with "
                             f"{option('--input-size HEIGHTxWIDTH', 'facts=ModelFacts(input_size=(H, W))')}.")
    from edgeseg.arch.profile import count_macs, count_params

    spec = loaded.input_spec
    model = {"arch": loaded.arch, "num_classes": loaded.num_classes, "params": count_params(loaded.model),
             "macs": count_macs(loaded.model, spec.height, spec.width)}
    meta = dict(meta, model=dict(model, **(meta.get("model") or {})), input=spec.to_dict(),
                **({"source": loaded.meta["source"]} if "source" in loaded.meta else {}))
    info = spec_from_sidecar(meta)[1] or loaded.dataset
    return Artifact(path, "pytorch", spec, info, meta.get("precision", "fp32"), meta, facts)


def foreign_engine_meta(path: Path, facts: Optional[ModelFacts]) -> dict:
    """What is known of an engine edgeseg did not build: only what the user says (TensorRT is not asked here,
    and an engine is never opened before the user has said --trust-engine, which it needs without a sha256)."""
    facts = facts or ModelFacts()
    spec = facts.input_spec()
    if spec is None:
        raise InputFileError(
            f"{path} has no sidecar: for an engine built elsewhere (e.g. by trtexec) give "
            f"{option('--input-size HEIGHTxWIDTH', 'facts=ModelFacts(input_size=(H, W))')} (the size it was built "
            f"for), {option('--mean/--std', 'its mean/std')} unless it expects ImageNet's, and "
            f"{option('--trust-engine', 'trust_engine=True')} if you built it (an engine is executable code).")
    num_classes = facts.num_classes or (facts.dataset.num_classes if facts.dataset else None)
    meta = {"artifact": path.name, "kind": "engine", "input": spec.to_dict(), "precision": "unknown",
            "model": {"arch": facts.arch or "engine", "num_classes": num_classes},
            "onnx": {"output_kind": "unknown"},  # the runtime reads the form from the output's rank
            "source": {"file": path.name, "format": "TensorRT engine from another tool", "given": facts.to_dict()}}
    if facts.dla_core is not None:  # TensorRT loads a DLA engine only with the runtime on its core
        meta["dla_core"] = int(facts.dla_core)
    if num_classes:  # otherwise read from the output at the first inference
        meta["dataset"] = facts.dataset_info(int(num_classes)).to_dict()
    return meta


def size_bytes(path: Path) -> int:
    """An artifact's bytes on disk: the file, or what a model folder loads (its configs and the weights in the format
    transformers reads: safetensors where there are any, a hub snapshot's links followed), not the TensorFlow or
    Flax copies a hub repository may hold beside them."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size
    files = [f for f in path.iterdir() if f.is_file()]
    weights = [f for f in files if f.name.endswith(".safetensors")] or [f for f in files if f.suffix == ".bin"]
    return sum(f.stat().st_size for f in weights + [f for f in files if f.suffix == ".json"])


def open_runner(artifact: Artifact, device: str = "cpu", threads: Optional[int] = None,
                trust_checkpoint: bool = False, trust_engine: bool = False,
                allow_engine_host_code: bool = False, precision: Optional[str] = None) -> Runner:
    """The runner for ``artifact``; ``precision`` (PyTorch only) overrides its sidecar's: fp16 = CUDA autocast."""
    shape = (3, artifact.input_spec.height, artifact.input_spec.width)
    if artifact.backend == "pytorch":
        from edgeseg.runtime.torch_runner import TorchRunner

        wanted = precision or artifact.precision
        precision = "fp16" if device != "cpu" and wanted == "fp16" else "fp32"
        return TorchRunner(str(artifact.path), shape, precision, device, trust_checkpoint, threads,
                           facts=artifact.facts)
    if artifact.backend == "onnxruntime":
        from edgeseg.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(artifact.path), shape, artifact.precision, device, threads)
    from edgeseg.runtime.tensorrt_runner import TensorRTRunner

    return TensorRTRunner(str(artifact.path), shape, artifact.precision, "cuda", artifact.meta, trust_engine,
                          allow_engine_host_code)
