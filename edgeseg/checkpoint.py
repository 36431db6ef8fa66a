"""Saving and safely loading every model format edgeseg accepts.

An edgeseg checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(weights_only=True)``, which cannot execute code:

    {"format": "edgeseg-checkpoint", "arch": ..., "arch_args": {...}, "num_classes": ...,
     "state_dict": {...}, "structure": {module: {attr: value}} | None,
     "input": {...}, "dataset": {...}, "meta": {...}}

``structure`` records the layer widths of a pruned model: the registered architecture
is built as usual, then the recorded layers are resized before the weights load, so a
pruned model needs no pickled class and no user code.

TorchScript archives load too (they hold no Python code to run). A full pickled
``nn.Module`` can run arbitrary code while loading and is only accepted with
``trust_checkpoint=True``.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from edgeseg.arch import canonical_name, create_model
from edgeseg.errors import ConfigError, InputFileError, UntrustedFileError
from edgeseg.fileio import atomic_path, require_file
from edgeseg.spec import DatasetInfo, InputSpec

FORMAT = "edgeseg-checkpoint"

# layer attributes that structural pruning changes, per layer type
_STRUCTURE_ATTRS = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.ConvTranspose2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
    nn.GroupNorm: ("num_channels", "num_groups"),
    nn.LayerNorm: ("normalized_shape",),
    nn.PReLU: ("num_parameters",),
}


@dataclass
class LoadedModel:
    """A model ready for inference plus what edgeseg knows about it."""

    model: nn.Module
    arch: str
    num_classes: int
    input_spec: Optional[InputSpec]
    dataset: Optional[DatasetInfo]
    arch_args: Dict[str, Any] = field(default_factory=dict)
    structure: Optional[Dict[str, Dict[str, Any]]] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    rebuildable: bool = True  # False for TorchScript / pickled modules: cannot be re-created from the registry


def layer_structure(model: nn.Module) -> Dict[str, Dict[str, Any]]:
    """Widths of every resizable layer, keyed by module name."""
    structure = {}
    for name, module in model.named_modules():
        attrs = _STRUCTURE_ATTRS.get(type(module))
        if attrs:
            structure[name] = {a: (list(v) if isinstance(v := getattr(module, a), tuple) else v) for a in attrs}
    return structure


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: str, num_classes: int,
                    input_spec: InputSpec, dataset: Optional[DatasetInfo], arch_args: Optional[dict] = None,
                    pruned: bool = False, meta: Optional[dict] = None) -> None:
    """Write an edgeseg checkpoint atomically."""
    payload = {
        "format": FORMAT,
        "version": 1,
        "arch": canonical_name(arch),
        "arch_args": dict(arch_args or {}),
        "num_classes": int(num_classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "structure": layer_structure(model) if pruned else None,
        "input": input_spec.to_dict(),
        "dataset": dataset.to_dict() if dataset else None,
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _apply_structure(model: nn.Module, structure: Dict[str, Dict[str, Any]], state_dict: Dict[str, torch.Tensor]) -> None:
    """Resize the recorded layers so the pruned weights fit, then let load_state_dict fill them."""
    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        module = modules.get(name)
        if module is None:
            raise InputFileError(f"The checkpoint's pruned layer '{name}' does not exist in this architecture; "
                                 f"it was made by another edgeseg or model version.")
        for attr, value in attrs.items():
            setattr(module, attr, tuple(value) if isinstance(value, list) else value)
        prefix = f"{name}." if name else ""
        for param_name, param in list(module.named_parameters(recurse=False)):
            key = prefix + param_name
            if key in state_dict:
                setattr(module, param_name, nn.Parameter(torch.empty_like(state_dict[key]), requires_grad=param.requires_grad))
        for buffer_name, buffer in list(module.named_buffers(recurse=False)):
            key = prefix + buffer_name
            if buffer is not None and key in state_dict:
                module.register_buffer(buffer_name, torch.empty_like(state_dict[key]))


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _from_state_dict(state_dict: dict, path: Path, arch: str, num_classes: int, spec, info) -> LoadedModel:
    """A bare state_dict: a registered architecture, or ``torchvision:NAME`` for torchvision's own models."""
    from edgeseg.arch.torchvision_models import classes_in_state_dict, from_torchvision_weights

    found = classes_in_state_dict(state_dict)
    if found > 0 and found != num_classes:
        raise ConfigError(f"The weights in {path} predict {found} classes but {num_classes} are needed (the data's); "
                          f"use weights trained for this dataset.")
    if arch.startswith("torchvision:"):
        name = arch.split(":", 1)[1]
        try:
            model = from_torchvision_weights(name, state_dict, num_classes)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1].strip()
            raise InputFileError(f"The weights in {path} do not fit torchvision's {name} ({first}).") from exc
        return LoadedModel(model.eval(), arch, num_classes, spec, info, rebuildable=False)
    canonical = canonical_name(arch)
    loaded = _from_payload({"arch": canonical, "num_classes": num_classes, "state_dict": state_dict}, path,
                           adapt_keys=True)
    loaded.input_spec, loaded.dataset = spec or loaded.input_spec, info or loaded.dataset
    return loaded


def _from_payload(payload: dict, path: Path, adapt_keys: bool = False, trust_code: bool = False) -> LoadedModel:
    try:
        arch = payload["arch"]
        num_classes = int(payload["num_classes"])
        state_dict = payload["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{path} is an incomplete edgeseg checkpoint (missing {exc}); recreate it.") from exc
    model = create_model(arch, num_classes, trust_code=trust_code, **payload.get("arch_args", {}))
    if payload.get("structure"):
        _apply_structure(model, payload["structure"], state_dict)
    try:
        model.load_state_dict(_adapt_keys(model, state_dict) if adapt_keys else state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise InputFileError(f"The weights in {path} do not fit architecture '{arch}' ({first}); "
                             f"check that the checkpoint was made for it.") from exc
    return LoadedModel(
        model=model.eval(), arch=arch, num_classes=num_classes,
        input_spec=InputSpec.from_dict(payload["input"]) if payload.get("input") else None,
        dataset=DatasetInfo.from_dict(payload["dataset"]) if payload.get("dataset") else None,
        arch_args=dict(payload.get("arch_args", {})), structure=payload.get("structure"), meta=payload.get("meta", {}),
    )


class ExportedProgramModel(nn.Module):
    """A ``torch.export`` program (``.pt2``) as a module: runs at the shape it was exported with.

    Exported graphs carry shape guards; a batch of another size is run in chunks of the
    exported batch and other image sizes are resized to the exported one (segmentation
    logits are resized back by whoever consumes them, e.g. the distillation losses).
    """

    def __init__(self, program):
        super().__init__()
        self.graph = program.module()
        example = program.example_inputs[0][0] if program.example_inputs else None
        self.example_shape = tuple(example.shape) if example is not None else None

    def train(self, mode: bool = True):  # exported graphs are frozen in the mode they were exported in
        self.training = mode
        return self

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.graph(x)
        return out["out"] if isinstance(out, dict) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self._run(x)
        except Exception:  # a shape guard of a static export: fall back to the exported shape
            if self.example_shape is None or tuple(x.shape) == self.example_shape:
                raise  # not a shape problem
            batch, _, height, width = self.example_shape
            if (height, width) != tuple(x.shape[2:]):
                x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
            chunks = []
            for start in range(0, x.shape[0], batch):
                part = x[start:start + batch]
                missing = batch - part.shape[0]
                if missing:
                    part = torch.cat([part, part[-1:].expand(missing, *part.shape[1:])])
                chunks.append(self._run(part)[: batch - missing])
            return torch.cat(chunks)


def _load_exported_program(path: Path) -> nn.Module:
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise InputFileError(f"{path} is not a loadable torch.export program ({type(exc).__name__}); re-export it "
                             f"with torch.export.save.") from exc
    return ExportedProgramModel(program)


def _is_exported_program(path: Path) -> bool:
    if path.suffix == ".pt2":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/archive_format") for n in archive.namelist())


def _adapt_keys(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Accept plain torchvision weights for edgeseg's wrapped torchvision models ('net.' prefix, no aux head)."""
    expected = model.state_dict().keys()
    if all(k in expected for k in state_dict):
        return state_dict
    prefixed = {f"net.{k}": v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
    return prefixed if all(k in expected for k in prefixed) else state_dict


def _infer_num_classes(model: nn.Module, input_spec: Optional[InputSpec]) -> int:
    height, width = (input_spec.height, input_spec.width) if input_spec else (64, 64)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, height, width))
    if isinstance(out, dict):
        out = out["out"]
    return int(out.shape[1])


def load_model(path: str | Path, *, trust_checkpoint: bool = False, arch: Optional[str] = None,
               num_classes: Optional[int] = None) -> LoadedModel:
    """Load any model file edgeseg accepts, refusing to execute untrusted code.

    ``arch`` and ``num_classes`` are needed only for a bare state_dict.

    >>> loaded = load_model("student.pt")  # doctest: +SKIP
    """
    path = require_file(path, "Model file")
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar

    side_spec, side_info = spec_from_sidecar(read_sidecar(path))
    if _is_exported_program(path):
        model = _load_exported_program(path)
        return LoadedModel(model, "torch.export", _infer_num_classes(model, side_spec), side_spec, side_info,
                           rebuildable=False)
    if _is_torchscript(path):
        try:
            model = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise InputFileError(f"{path} is a damaged TorchScript archive ({exc}); re-export it.") from exc
        return LoadedModel(model, "torchscript", _infer_num_classes(model, side_spec), side_spec, side_info,
                           rebuildable=False)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_checkpoint:
            raise UntrustedFileError(
                f"{path} holds pickled Python objects that could run code when loaded; if you trust its source, "
                f"pass --trust-checkpoint, otherwise ask for an edgeseg checkpoint or a state_dict.") from exc
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the unpickler fails in many ways on truncated or foreign bytes
        raise InputFileError(f"{path} is not a readable PyTorch checkpoint (it may be truncated or of another "
                             f"format); recreate it.") from exc
    if isinstance(payload, nn.Module):
        model = payload.eval()
        return LoadedModel(model, type(model).__name__, _infer_num_classes(model, side_spec), side_spec, side_info,
                           rebuildable=False)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        loaded = _from_payload(payload, path, trust_code=trust_checkpoint)
        loaded.input_spec = side_spec or loaded.input_spec
        loaded.dataset = side_info or loaded.dataset
        return loaded
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if arch is None or num_classes is None:
            raise ConfigError(f"{path} is a bare state_dict; say which architecture it is with --arch NAME and "
                              f"its --num-classes.")
        return _from_state_dict(payload, path, arch, num_classes, side_spec, side_info)
    raise InputFileError(f"{path} holds neither an edgeseg checkpoint, a state_dict nor TorchScript; "
                         f"save the model with edgeseg or torch.save(model.state_dict()).")
