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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from edgeseg.arch import canonical_name, create_model
from edgeseg.errors import ConfigError, InputFileError, UntrustedFileError, option
from edgeseg.fileio import atomic_path, require_file
from edgeseg.spec import DatasetInfo, InputSpec, ModelFacts

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
    foreign: bool = False  # a checkpoint edgeseg did not make, read with the user's ModelFacts


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


def _from_foreign(state_dict: dict, file_format: str, path: Path, facts: ModelFacts, spec, info) -> LoadedModel:
    """A checkpoint edgeseg did not make: build ``facts.arch`` and fit the file's tensors onto it, or refuse."""
    from edgeseg.arch.torchvision_models import classes_in_state_dict
    from edgeseg.console import say
    from edgeseg.foreign_checkpoint import load_foreign_weights

    if facts.arch is None:
        raise ConfigError(f"{path} is a {file_format}, which does not say its architecture; say which "
                          f"architecture it is with {option('--arch NAME', 'facts=ModelFacts(arch=NAME)')} (a "
                          f"registered name, torchvision:NAME, smp:ARCH:ENCODER or file.py:fn).")
    found = classes_in_state_dict(state_dict)
    num_classes = facts.num_classes or (found if found > 1 else None)
    if num_classes is None:
        raise ConfigError(f"The number of classes of {path} cannot be read from its weights; give "
                          f"{option('--num-classes', 'facts=ModelFacts(num_classes=N)')}.")
    if found > 1 and found != num_classes:
        raise ConfigError(f"The weights in {path} predict {found} classes but {num_classes} are needed; "
                          f"give {option(f'--num-classes {found}', f'ModelFacts(num_classes={found})')} or use "
                          f"weights trained for this dataset.")
    arch = canonical_name(facts.arch)
    model = create_model(arch, num_classes)  # the user named this architecture, so a file.py:fn may run
    report = load_foreign_weights(model, state_dict, path, file_format, arch)
    say(f"Loaded {path.name} ({file_format}) as {arch}: {report.summary()}")
    if spec is None and not (facts.mean and facts.std):
        say("Normalising with ImageNet's mean/std where --mean/--std are not given (the default)")
    spec = spec or facts.input_spec()
    meta = {"source": {"file": path.name, **report.to_dict(), "unexpected": list(report.unexpected[:20]),
                       "given": facts.to_dict()}}
    return LoadedModel(model.eval(), arch, num_classes, spec, info or facts.dataset_info(num_classes), meta=meta,
                       foreign=True)


def _from_payload(payload: dict, path: Path, trust_code: bool = False) -> LoadedModel:
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
        model.load_state_dict(state_dict)
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


def _probe(model: nn.Module, input_spec: Optional[InputSpec]):
    """The model's output on a blank image at its input size (64x64 when unknown)."""
    height, width = (input_spec.height, input_spec.width) if input_spec else (64, 64)
    with torch.no_grad():
        return model(torch.zeros(1, 3, height, width))


def _infer_num_classes(model: nn.Module, input_spec: Optional[InputSpec]) -> int:
    out = _probe(model, input_spec)
    if isinstance(out, dict):
        out = out["out"]
    return int(out.shape[1])


def _folder_of_weights(path: Path) -> Optional[Path]:
    """A Hugging Face folder's weights file given instead of the folder: the folder (its config says the rest).

    Only a config transformers wrote counts (timm's and smp's save_pretrained write one too), and only when
    no --arch says otherwise: then the file is a state_dict like any other.
    """
    if path.suffix in (".safetensors", ".bin") and path.is_file():
        from edgeseg.huggingface import find_folder

        return find_folder(path.parent)
    return None


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise InputFileError(f"{path} is a safetensors file, which needs the safetensors package; pip install "
                             f"safetensors.") from None
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError on damaged headers
        raise InputFileError(f"{path} is not a readable safetensors file ({exc}); recreate it.") from exc


def _from_hf_folder(folder: Path, facts: ModelFacts) -> LoadedModel:
    """A Hugging Face folder: its config names the architecture, classes and input; ``facts`` may set the input."""
    from edgeseg import huggingface
    from edgeseg.arch.huggingface import load_folder, plain_config
    from edgeseg.console import say

    found = huggingface.read_folder(folder)
    name = huggingface.model_name(found)
    if facts.arch and canonical_name(facts.arch) != name:
        raise ConfigError(f"{folder} is a {found.architecture} (its config.json says so); drop "
                          f"{option('--arch', 'ModelFacts(arch=...)')} {facts.arch}.")
    if facts.num_classes and facts.num_classes != found.num_classes:
        raise ConfigError(f"{folder} predicts {found.num_classes} classes (id2label in its config.json), not "
                          f"{facts.num_classes}; drop {option('--num-classes', 'ModelFacts(num_classes=...)')}, or "
                          f"fine-tune it for your classes first.")
    model = load_folder(found)
    size = facts.input_size or found.input_size
    spec = InputSpec(int(size[0]), int(size[1]), mean=facts.mean or found.mean, std=facts.std or found.std,
                     color=found.color) if size else None
    generic = all(c.upper().startswith("LABEL_") for c in found.classes)
    if generic and facts.dataset is not None and facts.dataset.num_classes == found.num_classes:
        info = facts.dataset  # LABEL_0..: the data's dataset.yaml names them better
    else:
        info = DatasetInfo(num_classes=found.num_classes, ignore_index=found.ignore_index, classes=found.classes,
                           name=folder.name)
    say(f"Loaded {folder} (Hugging Face {found.architecture}, {found.num_classes} classes"
        f"{f', input {spec.height}x{spec.width}' if spec else ''})")
    meta = {"source": {"file": str(folder), "format": "Hugging Face folder", "architecture": found.architecture,
                       "given": facts.to_dict()}}
    return LoadedModel(model, name, found.num_classes, spec, info,
                       arch_args={"config": plain_config(model.net.config)}, meta=meta)


def load_model(path: str | Path, *, trust_checkpoint: bool = False, arch: Optional[str] = None,
               num_classes: Optional[int] = None, facts: Optional[ModelFacts] = None) -> LoadedModel:
    """Load any model file edgeseg accepts, refusing to execute untrusted code.

    What the file (or its sidecar) does not say comes from ``facts`` (``arch`` and
    ``num_classes`` are shorthands for theirs): a checkpoint made elsewhere (a bare
    state_dict, torchvision's reference scripts, Lightning, MMSegmentation, DDP) needs
    at least ``facts.arch``; see ``edgeseg.foreign_checkpoint``.

    >>> loaded = load_model("student.pt")  # doctest: +SKIP
    >>> loaded = load_model("model_29.pth", facts=ModelFacts(arch="torchvision:lraspp_mobilenet_v3_large",
    ...                                                      input_size=(520, 520)))  # doctest: +SKIP
    """
    facts = replace(facts or ModelFacts(), **{k: v for k, v in (("arch", arch), ("num_classes", num_classes))
                                              if v is not None})
    from edgeseg.huggingface import find_folder

    folder = find_folder(path) or (None if facts.arch else _folder_of_weights(Path(path)))
    if folder is not None:
        return _from_hf_folder(folder, facts)
    path = require_file(path, "Model file")
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar

    recorded_spec, side_info = spec_from_sidecar(read_sidecar(path))
    side_spec = recorded_spec or facts.input_spec()  # what the file does not record: the user's --input-size
    if _is_exported_program(path):
        model = _load_exported_program(path)
        return _module_file(model, "torch.export", side_spec, side_info, facts)
    if _is_torchscript(path):
        try:
            model = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise InputFileError(f"{path} is a damaged TorchScript archive ({exc}); re-export it.") from exc
        return _module_file(model, "torchscript", side_spec, side_info, facts)
    from edgeseg.foreign_checkpoint import find_state_dict, safe_globals_for_checkpoints

    if path.suffix == ".safetensors":  # tensors only: safe to read, and never code
        return _from_foreign(_read_safetensors(path), "safetensors file", path, facts, recorded_spec, side_info)
    try:
        with safe_globals_for_checkpoints():
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_checkpoint:
            raise UntrustedFileError(
                f"{path} holds pickled Python objects that could run code when loaded; if you trust its source, "
                f"pass {option('--trust-checkpoint', 'trust_checkpoint=True')}, otherwise ask for an edgeseg checkpoint or a state_dict.") from exc
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the unpickler fails in many ways on truncated or foreign bytes
        raise InputFileError(f"{path} is not a readable PyTorch checkpoint (it may be truncated or of another "
                             f"format); recreate it.") from exc
    if isinstance(payload, nn.Module):
        return _module_file(payload.eval(), type(payload).__name__, side_spec, side_info, facts)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        loaded = _from_payload(payload, path, trust_code=trust_checkpoint)
        loaded.input_spec = recorded_spec or loaded.input_spec
        loaded.dataset = side_info or loaded.dataset
        return loaded
    state_dict, file_format = find_state_dict(payload)
    if state_dict is not None:
        from edgeseg.foreign_checkpoint import architecture_named_in

        named = architecture_named_in(payload)
        if facts.arch is None and named is not None:
            from edgeseg.console import say

            say(f"{path.name} names its architecture ({file_format} args.model): {named}")
            facts = replace(facts, arch=named)
        return _from_foreign(state_dict, file_format, path, facts, recorded_spec, side_info)
    raise InputFileError(f"{path} holds neither an edgeseg checkpoint, a state_dict nor TorchScript; "
                         f"save the model with edgeseg or torch.save(model.state_dict()).")


def _module_file(model: nn.Module, kind: str, spec, info, facts: ModelFacts) -> LoadedModel:
    """A file holding the whole module (TorchScript, torch.export, pickled): runnable, not rebuildable."""
    from edgeseg.arch.huggingface import PixelLogits, is_segmenter_output

    if is_segmenter_output(_probe(model, spec)):  # a pickled transformers model: logits, upsampled to the input
        model, kind = PixelLogits(model).eval(), f"{kind} (Hugging Face)"
    num_classes = _infer_num_classes(model, spec)
    return LoadedModel(model, kind, num_classes, spec, info or (facts.dataset_info(num_classes) if spec else None),
                       rebuildable=False)
