"""Pretrained backbones: ImageNet classification weights mapped onto a segmentation model's encoder.

Each registered architecture whose encoder is a torchvision classification network
names that network and where its layers sit (``BACKBONES``). Weights come from

- ``imagenet``: torchvision's own weights for that network, read only from torchvision's
  cache (``$TORCH_HOME/hub/checkpoints``). Nothing is downloaded: without the cached file
  the user is told which file to put where, or to give a file instead.
- a file: a classification checkpoint in torchvision naming (matched by name) or timm
  naming (timm's ResNets share torchvision's names; its MobileNets list the same layers
  in the same order, so they are matched by order and shape).

Fewer than 90% of the encoder's tensors matched is refused: a backbone that is mostly
random is not a pretrained one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import torch
from torch import nn

from edgeseg.errors import ConfigError, InputFileError

MIN_MATCHED = 0.9
_SKIP = ("num_batches_tracked",)  # a step counter, not a weight


@dataclass(frozen=True)
class Backbone:
    """Where a torchvision classification network's layers sit inside a segmentation model."""

    network: str  # torchvision classification model, e.g. "mobilenet_v3_large"
    prefix: str  # its layers' prefix in the segmentation model's state_dict
    source_prefix: str = "features."  # their prefix in the classification model's state_dict
    rename: Optional[Callable[[str], str]] = None  # segmentation-model key (after prefix) -> source key (after its)


def _refinenet_stage(key: str) -> str:
    """RefineNet splits MobileNetV2's features into stages (slices keep the block numbers): S.K.rest -> K.rest."""
    return key.split(".", 1)[1]


_MOBILENET_V3_LARGE = Backbone("mobilenet_v3_large", "net.backbone.")
_RESNET50 = Backbone("resnet50", "net.backbone.", "")
BACKBONES: Dict[str, Backbone] = {
    "lraspp-mobilenetv3-large": _MOBILENET_V3_LARGE,
    "deeplabv3-mobilenetv3-large": _MOBILENET_V3_LARGE,
    "lraspp-mobilenetv3-small": Backbone("mobilenet_v3_small", "net.backbone."),
    "deeplabv3plus-mobilenetv3": Backbone("mobilenet_v3_large", "backbone."),
    "pspnet-mobilenetv3": Backbone("mobilenet_v3_large", "backbone."),
    "refinenet-lw-mobilenetv2": Backbone("mobilenet_v2", "stages.", rename=_refinenet_stage),
    "deeplabv3-resnet50": _RESNET50,
    "fcn-resnet50": _RESNET50,
    # torchvision's segmentation models by name (wrapped as net.*)
    "torchvision:lraspp_mobilenet_v3_large": _MOBILENET_V3_LARGE,
    "torchvision:deeplabv3_mobilenet_v3_large": _MOBILENET_V3_LARGE,
    "torchvision:deeplabv3_resnet50": _RESNET50,
    "torchvision:fcn_resnet50": _RESNET50,
    "torchvision:deeplabv3_resnet101": Backbone("resnet101", "net.backbone.", ""),
    "torchvision:fcn_resnet101": Backbone("resnet101", "net.backbone.", ""),
}


@dataclass(frozen=True)
class BackboneLoad:
    """What ``--backbone-weights`` did: recorded in the checkpoint's meta and sidecar."""

    source: str  # "imagenet" or the file
    network: str
    matched: int
    total: int
    matched_by: str  # "name" or "order"
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"source": self.source, "network": self.network, "matched": self.matched, "total": self.total,
                "matched_by": self.matched_by, "mean": list(self.mean), "std": list(self.std)}


def backbone_of(arch: str) -> Optional[Backbone]:
    return BACKBONES.get(arch)


def _weights_enum(network: str):
    from torchvision.models import get_model_weights

    return get_model_weights(network).DEFAULT


def cached_weights_file(weights) -> Path:
    """Where torchvision's loader keeps (and looks for) the file of a weights enum member."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def cached_imagenet_file(network: str) -> Path:
    """Where torchvision's loader keeps (and looks for) the ImageNet weights of ``network``."""
    return cached_weights_file(_weights_enum(network))


def _missing_imagenet_sentence(arch: str, network: str) -> str:
    weights = _weights_enum(network)
    path = cached_imagenet_file(network)
    return (f"ImageNet weights for {arch}'s {network} backbone are not in torchvision's cache and edgeseg never "
            f"downloads: put {path.name} ({weights.url}) in {path.parent}/ (the folder follows TORCH_HOME), or give "
            f"a classification checkpoint with --backbone-weights PATH")


def _backbone_keys(model: nn.Module, backbone: Backbone) -> Dict[str, str]:
    """{segmentation-model key: classification-model key} for every encoder tensor."""
    keys = {}
    for key in model.state_dict():
        if not key.startswith(backbone.prefix) or key.endswith(_SKIP):
            continue
        rest = key[len(backbone.prefix):]
        keys[key] = backbone.source_prefix + (backbone.rename(rest) if backbone.rename else rest)
    return keys


def _by_order(wanted: List[Tuple[str, torch.Size]], state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Match tensors in order: the file's leading tensors whose shapes follow the encoder's, one for one (timm)."""
    found = {}
    tensors = [v for k, v in state_dict.items() if not k.endswith(_SKIP)]
    for (name, shape), tensor in zip(wanted, tensors):
        if tensor.shape != shape:
            break
        found[name] = tensor
    return found


def _source_tensors(model: nn.Module, backbone: Backbone, state_dict: Dict[str, torch.Tensor]) -> tuple:
    """{segmentation key: tensor} from a classification state_dict, by name or else by order; and how."""
    from edgeseg.foreign_checkpoint import fit_state_dict

    keys = _backbone_keys(model, backbone)
    expected = model.state_dict()
    classifier = _classification_model(backbone.network)
    renamed, _ = fit_state_dict(classifier, state_dict)  # strips module./model. wrappers; keeps shape-true names
    by_name = {seg: renamed[src] for seg, src in keys.items()
               if src in renamed and renamed[src].shape == expected[seg].shape}
    if len(by_name) >= MIN_MATCHED * len(keys):
        return by_name, "name"
    wanted_sources = [k for k in classifier.state_dict() if not k.endswith(_SKIP)]
    source_shapes = classifier.state_dict()
    in_order = _by_order([(k, source_shapes[k].shape) for k in wanted_sources], state_dict)
    by_order = {seg: in_order[src] for seg, src in keys.items() if src in in_order}
    return (by_order, "order") if len(by_order) > len(by_name) else (by_name, "name")


def _classification_model(network: str) -> nn.Module:
    from torchvision.models import get_model

    return get_model(network, weights=None)


def load_backbone_weights(model: nn.Module, arch: str, weights: Optional[str]) -> Optional[BackboneLoad]:
    """Initialise ``model``'s encoder from ``weights`` ("imagenet", a file, "scratch", or None: ImageNet if cached).

    Returns what was loaded, or None when the model starts from scratch (said in one line).

    >>> load_backbone_weights(model, "lraspp-mobilenetv3-large", "imagenet")  # doctest: +SKIP
    """
    from edgeseg.console import say

    backbone = backbone_of(arch)
    if weights in (None, "scratch"):
        if backbone is None or weights == "scratch":
            return None
        if not cached_imagenet_file(backbone.network).is_file():
            say(f"{arch} starts from scratch: its ImageNet backbone is not in torchvision's cache "
                f"({cached_imagenet_file(backbone.network)}); put it there or pass --backbone-weights PATH")
            return None
        weights = "imagenet"
    if backbone is None:
        known = ", ".join(sorted(k for k in BACKBONES if ":" not in k))
        raise ConfigError(f"{arch} has no pretrained backbone edgeseg can load; drop --backbone-weights or choose "
                          f"an architecture with one ({known}).")
    if weights == "imagenet":
        path = cached_imagenet_file(backbone.network)
        if not path.is_file():
            raise InputFileError(_missing_imagenet_sentence(arch, backbone.network) + ".")
        enum = _weights_enum(backbone.network)
        # torchvision's loader finds the cached file checked above; weights_only: a file placed by hand runs no code
        state_dict = enum.get_state_dict(progress=False, map_location="cpu", weights_only=True)
        transforms = enum.transforms()
        mean, std = tuple(transforms.mean), tuple(transforms.std)
        source = f"imagenet ({enum})"
    else:
        state_dict, source = _read_classification_file(Path(weights)), str(weights)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what torchvision and timm ImageNet models use
    tensors, how = _source_tensors(model, backbone, state_dict)
    total = len(_backbone_keys(model, backbone))
    if len(tensors) < MIN_MATCHED * total:
        raise InputFileError(f"Only {len(tensors)} of the {total} tensors of {arch}'s {backbone.network} backbone "
                             f"match {source} ({100 * len(tensors) / max(total, 1):.0f}%, at least "
                             f"{100 * MIN_MATCHED:.0f}% needed); give a {backbone.network} classification checkpoint.")
    model.load_state_dict(tensors, strict=False)
    say(f"Backbone {backbone.network} of {arch} initialised from {source}: {len(tensors)} of {total} tensors "
        f"(matched by {how})")
    return BackboneLoad(source, backbone.network, len(tensors), total, how,
                        tuple(255.0 * v for v in mean), tuple(255.0 * v for v in std))


def _read_classification_file(path: Path) -> Dict[str, torch.Tensor]:
    from edgeseg.fileio import require_file
    from edgeseg.foreign_checkpoint import find_state_dict, safe_globals_for_checkpoints

    require_file(path, "Backbone weights")
    try:
        with safe_globals_for_checkpoints():
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputFileError(f"{path} is not a readable PyTorch weights file of tensors ({type(exc).__name__}); "
                             f"save the classification model's state_dict with torch.save.") from exc
    if isinstance(payload, dict) and not find_state_dict(payload)[0] and "state_dict_ema" in payload:
        payload = payload["state_dict_ema"]  # timm's train script keeps the EMA weights under this key
    state_dict, _ = find_state_dict(payload)
    if state_dict is None:
        raise InputFileError(f"{path} holds no state_dict of tensors; save the classification model's state_dict "
                             f"with torch.save.")
    return state_dict


def check_backbone_option(weights: Optional[str]) -> Optional[str]:
    """``--backbone-weights`` is imagenet, scratch or an existing file; say so in one sentence otherwise."""
    if weights in (None, "imagenet", "scratch"):
        return weights
    if not Path(weights).is_file():
        raise InputFileError(f"--backbone-weights {weights} is neither 'imagenet', 'scratch' nor an existing file; "
                             f"check the path.")
    return weights



# torchvision's pretrained segmentation models, by the names edgeseg knows them under
_SEGMENTATION_NAMES = {"deeplabv3-resnet50": "deeplabv3_resnet50", "fcn-resnet50": "fcn_resnet50",
                       "deeplabv3-mobilenetv3-large": "deeplabv3_mobilenet_v3_large",
                       "lraspp-mobilenetv3-large": "lraspp_mobilenet_v3_large"}


def load_segmentation_weights(model: nn.Module, arch: str, weights: str, *, allow_new_classes: bool) -> dict:
    """Load torchvision's pretrained segmentation weights ``weights`` (e.g. COCO_WITH_VOC_LABELS_V1) into ``model``.

    Read only from torchvision's cache, like ``imagenet`` above. With ``allow_new_classes``
    (a starting point for another dataset) the class layers whose width differs keep
    their fresh initialisation; otherwise (a teacher) every tensor must fit.

    >>> load_segmentation_weights(model, "torchvision:deeplabv3_resnet50", "COCO_WITH_VOC_LABELS_V1",
    ...                           allow_new_classes=True)  # doctest: +SKIP
    """
    from torchvision.models import get_model_weights

    from edgeseg.console import say
    from edgeseg.foreign_checkpoint import fit_state_dict

    name = arch.split(":", 1)[1] if arch.startswith("torchvision:") else _SEGMENTATION_NAMES.get(arch)
    if name is None:
        raise ConfigError(f"--weights loads torchvision's pretrained segmentation models; {arch} is not one (use "
                          f"torchvision:NAME or {', '.join(sorted(_SEGMENTATION_NAMES))}).")
    choices = get_model_weights(name)
    if weights not in choices.__members__:
        raise ConfigError(f"torchvision has no weights {weights} for {name}; choose one of: "
                          f"{', '.join(choices.__members__)}.")
    enum = choices[weights]
    path = cached_weights_file(enum)
    if not path.is_file():
        raise InputFileError(f"torchvision's {name} weights {weights} are not in its cache and edgeseg never "
                             f"downloads: put {path.name} ({enum.url}) in {path.parent}/ (the folder follows "
                             f"TORCH_HOME), or give a checkpoint file with --arch {arch}.")
    state_dict = {k: v for k, v in enum.get_state_dict(progress=False, map_location="cpu", weights_only=True).items()
                  if not k.startswith("aux_classifier.")}
    fitting, (missing, _unexpected, mismatched) = fit_state_dict(model, state_dict)
    unfilled = [k for k in missing if k not in mismatched] + ([] if allow_new_classes else list(mismatched))
    if unfilled:
        raise InputFileError(f"torchvision's {name} {weights} does not fit this model ({len(unfilled)} tensors "
                             f"missing or of another shape, e.g. {', '.join(unfilled[:3])}); as a teacher its "
                             f"{len(enum.meta.get('categories') or [])} classes must be the data's.")
    model.load_state_dict(fitting, strict=False)
    say(f"{arch} initialised from torchvision's {weights}: {len(fitting)} tensors"
        + (f"; {len(mismatched)} class-layer tensors start fresh for the new classes" if mismatched else ""))
    return {"source": f"torchvision {name} {weights}", "matched": len(fitting), "reinitialised": list(mismatched)}
