"""Reading the checkpoints users already have: find the state_dict, fit its names to the model, report.

Shapes seen in practice, all recognised from their keys alone:

- a bare state_dict (``torch.save(model.state_dict())``);
- torchvision's reference scripts: ``{"model", "optimizer", "lr_scheduler", "epoch", "args"}``;
- PyTorch Lightning: ``{"state_dict": {"model.<name>": ...}, "epoch", "pytorch-lightning_version", ...}``;
- MMSegmentation: ``{"meta", "state_dict"}``;
- any of them saved from a DDP-wrapped model, whose names start with ``module.``.

Names are fitted to the model by stripping the wrappers' prefixes (``module.``,
``model.``) and adding edgeseg's own (``net.``: torchvision models are wrapped so they
return plain logits). A load that would leave any of the model's tensors random is
refused: a half-initialised model would go through the whole pipeline silently wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from edgeseg.errors import InputFileError, option

# prefixes that wrappers and training frameworks put in front of the model's own names
_WRAPPER_PREFIXES = ("module.", "model.", "model.module.", "module.model.", "net.")
# buffers a model can do without: BatchNorm's step counter only matters with momentum=None
_HARMLESS_MISSING = ("num_batches_tracked",)


@dataclass(frozen=True)
class LoadReport:
    """How a foreign state_dict fitted the model: what the user sees and the sidecar records."""

    file_format: str
    matched: int
    missing: Tuple[str, ...]
    unexpected: Tuple[str, ...]
    mismatched: Tuple[str, ...]  # same name, other shape

    def summary(self) -> str:
        parts = [f"{self.matched} tensors matched", f"{len(self.missing)} missing",
                 f"{len(self.unexpected)} unexpected"]
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} of another shape")
        if self.unexpected:
            parts[2] += f" ({_few(self.unexpected)})"
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"format": self.file_format, "matched": self.matched, "missing": list(self.missing),
                "unexpected": list(self.unexpected), "mismatched": list(self.mismatched)}


def _few(names, count: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:count]) + (f" and {len(names) - count} more" if len(names) > count else "")


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def find_state_dict(payload) -> Tuple[Dict[str, torch.Tensor], str]:
    """The model's tensors in a loaded checkpoint and the name of the shape they came in; None if none is found."""
    if _is_state_dict(payload):
        return payload, "bare state_dict"
    if not isinstance(payload, dict):
        return None, ""
    if _is_state_dict(payload.get("model")):
        return payload["model"], "torchvision reference checkpoint"
    if _is_state_dict(payload.get("state_dict")):
        if "meta" in payload:
            return payload["state_dict"], "MMSegmentation checkpoint"
        if any("lightning" in str(k) for k in payload):
            return payload["state_dict"], "Lightning checkpoint"
        return payload["state_dict"], "checkpoint with a state_dict"
    if _is_state_dict(payload.get("model_state_dict")):
        return payload["model_state_dict"], "checkpoint with a model_state_dict"
    return None, ""


def architecture_named_in(payload) -> Optional[str]:
    """The architecture a checkpoint names itself, as an --arch value, or None.

    torchvision's reference scripts save their arguments, whose ``model`` is the
    torchvision builder's name (``lraspp_mobilenet_v3_large``); only the names of
    torchvision's segmentation models are taken, anything else stays the user's to say.
    """
    args = payload.get("args") if isinstance(payload, dict) else None
    name = getattr(args, "model", None) if args is not None else None
    if not isinstance(name, str):
        return None
    from edgeseg.arch.torchvision_models import torchvision_segmentation_names

    return f"torchvision:{name}" if name in torchvision_segmentation_names() else None


def _renamings(names: List[str]):
    """Candidate name maps: as is, with one wrapper prefix stripped, then with edgeseg's 'net.' added."""
    strips = [""] + [p for p in _WRAPPER_PREFIXES if any(n.startswith(p) for n in names)]
    for strip in strips:
        for add in ("", "net."):
            yield strip, add


def fit_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], tuple]:
    """The renaming of ``state_dict`` that fills most of ``model``'s tensors, and (missing, unexpected, mismatched)."""
    expected = model.state_dict()
    best = None
    for strip, add in _renamings(list(state_dict)):
        renamed = {add + (k[len(strip):] if strip and k.startswith(strip) else k): v for k, v in state_dict.items()}
        fits = sum(1 for k, v in renamed.items() if k in expected and expected[k].shape == v.shape)
        if best is None or fits > best[0]:
            best = (fits, renamed)
    renamed = best[1]
    mismatched = tuple(k for k, v in renamed.items() if k in expected and expected[k].shape != v.shape)
    fitting = {k: v for k, v in renamed.items() if k in expected and expected[k].shape == v.shape}
    missing = tuple(k for k in expected if k not in fitting and not k.endswith(_HARMLESS_MISSING))
    unexpected = tuple(k for k in renamed if k not in expected)
    return fitting, (missing, unexpected, mismatched)


def load_foreign_weights(model: nn.Module, state_dict: Dict[str, torch.Tensor], path: Path, file_format: str,
                         arch: str) -> LoadReport:
    """Load ``state_dict`` into ``model`` (names fitted), refusing when any of the model's tensors would stay random."""
    fitting, (missing, unexpected, mismatched) = fit_state_dict(model, state_dict)
    if missing or mismatched:
        left = mismatched + tuple(k for k in missing if k not in mismatched)
        raise InputFileError(
            f"The weights in {path} would leave {len(left)} of {arch}'s {len(model.state_dict())} tensors random "
            f"({_few(left)}{' have another shape' if mismatched else ' are missing'}); check "
            f"{option('--arch and --num-classes', 'ModelFacts(arch=..., num_classes=...)')} against the model "
            f"that was trained.")
    model.load_state_dict(fitting, strict=False)
    return LoadReport(file_format, len(fitting), missing, unexpected, mismatched)


def safe_globals_for_checkpoints():
    """Types that training scripts store next to the weights and that load without running code.

    torchvision's reference scripts save their ``argparse.Namespace`` of arguments; a
    Namespace is a plain attribute bag, so allowing it keeps ``weights_only=True`` safe.
    """
    import argparse

    return torch.serialization.safe_globals([argparse.Namespace])

