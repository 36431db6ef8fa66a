"""Architectures from outside the registry: torchvision by name, segmentation_models_pytorch, the user's own file.

- ``torchvision:NAME`` (e.g. ``torchvision:fcn_resnet101``), built without weights;
- ``smp:ARCH[:ENCODER]`` (e.g. ``smp:Unet:resnet18``) when segmentation_models_pytorch is
  installed (``pip install 'edgeseg[smp]'``), encoder weights never downloaded;
- ``hf:<transformers class>`` with ``config=`` the model folder's config (how an edgeseg
  checkpoint of a Hugging Face model rebuilds it; see ``edgeseg.huggingface``);
- ``path/to/file.py:build_fn``: the user's own code, called as ``build_fn(num_classes=N,
  **arch_args)``. It runs only because the user named it: a checkpoint that records such
  an architecture rebuilds it only with ``--trust-checkpoint``.
Every model is wrapped so that dict outputs (``{"out": ...}``) and tuples of
(logits, auxiliary...) become plain logits, as the rest of edgeseg expects.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from torch import Tensor, nn

from edgeseg.errors import ConfigError, InputFileError, MissingDependencyError, UntrustedFileError, option


class MainOutput(nn.Module):
    """Logits from whatever the wrapped model returns: a tensor, {"out": ...}, or (logits, aux, ...)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"] if "out" in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def all_outputs(self, x: Tensor):
        """Every head's output; pruning traces these so an auxiliary head shrinks with the layers feeding it."""
        return self.net(x)


def is_external(name: str) -> bool:
    return name.startswith(("torchvision:", "smp:", "hf:")) or ".py:" in name


def build_external(name: str, num_classes: int, *, trust_code: bool = True, **arch_args) -> nn.Module:
    if name.startswith("torchvision:"):
        return _torchvision(name.split(":", 1)[1], num_classes, **arch_args)
    if name.startswith("smp:"):
        return _smp(name, num_classes, **arch_args)
    if name.startswith("hf:"):
        from edgeseg.arch import huggingface

        return huggingface.build(name.split(":", 1)[1], num_classes, **arch_args)
    return _user_file(name, num_classes, trust_code, **arch_args)


def _torchvision(model_name: str, num_classes: int, **arch_args) -> nn.Module:
    from torchvision import models

    from edgeseg.arch.torchvision_models import torchvision_segmentation_names

    known = torchvision_segmentation_names()
    if model_name not in known:
        raise ConfigError(f"'{model_name}' is not a torchvision segmentation model; choose one of: {', '.join(known)}.")
    return MainOutput(models.get_model(model_name, weights=None, weights_backbone=None, num_classes=num_classes,
                                       **arch_args))


def _smp(name: str, num_classes: int, **arch_args) -> nn.Module:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise MissingDependencyError(f"{name} needs segmentation_models_pytorch; pip install 'edgeseg[smp]'.") from None
    parts = name.split(":")
    arch, encoder = parts[1], parts[2] if len(parts) > 2 else "resnet18"
    try:
        return MainOutput(smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes,
                                           **arch_args))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"segmentation_models_pytorch cannot build {arch} with encoder {encoder} ({exc}).") from exc


def _user_file(name: str, num_classes: int, trust_code: bool, **arch_args) -> nn.Module:
    file_name, _, function_name = name.rpartition(":")
    path = Path(file_name)
    if not trust_code:
        raise UntrustedFileError(f"This checkpoint's architecture is built by your code in {name}; running it again "
                                 f"needs {option('--trust-checkpoint', 'trust_checkpoint=True')} (only if you trust {path.name}).")
    if not path.is_file():
        raise InputFileError(f"--arch {name}: {path} does not exist; give PATH.py:FUNCTION.")
    spec = importlib.util.spec_from_file_location(f"edgeseg_user_arch_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    build = getattr(module, function_name, None)
    if not callable(build):
        raise ConfigError(f"--arch {name}: {path.name} has no function {function_name}.")
    model = build(num_classes=num_classes, **arch_args)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--arch {name}: {function_name}() returned {type(model).__name__}, not a torch nn.Module.")
    from edgeseg.arch.huggingface import PixelLogits
    from edgeseg.huggingface import SUPPORTED

    if type(model).__name__ in SUPPORTED:  # a transformers model: full-size logits, its attention kept whole
        return PixelLogits(model)
    return MainOutput(model)
