"""One registry of architectures: ``@register`` a builder, ``create_model(name, num_classes=...)`` builds it.

Every registered model takes a float NCHW batch and returns logits of shape
(N, num_classes, H, W) at the input's resolution, so every later stage can treat all
architectures alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

from edgeseg.errors import ConfigError


@dataclass(frozen=True)
class ArchEntry:
    name: str
    build: Callable  # build(num_classes: int, **arch_args) -> nn.Module
    summary: str
    aliases: tuple = ()


_REGISTRY: Dict[str, ArchEntry] = {}
_ALIASES: Dict[str, str] = {}


def register(name: str, summary: str, aliases: tuple = ()) -> Callable:
    """Decorator that adds a builder to the registry under ``name`` and its aliases."""

    def decorator(build: Callable) -> Callable:
        _REGISTRY[name] = ArchEntry(name, build, summary, tuple(aliases))
        for alias in aliases:
            _ALIASES[alias] = name
        return build

    return decorator


def _ensure_builtins_loaded() -> None:
    # importing the modules runs their @register decorators
    from edgeseg.arch import (bisenetv2, deeplabv3plus, enet, pspnet, refinenet, segformer,  # noqa: F401
                              torchvision_models, unet)


def canonical_name(name: str) -> str:
    from edgeseg.arch.external import is_external

    if is_external(name):  # torchvision:NAME, smp:ARCH:ENCODER, file.py:function
        return name if ".py:" not in name else f"{Path(name.rpartition(':')[0]).resolve()}:{name.rpartition(':')[2]}"
    _ensure_builtins_loaded()
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        known = ", ".join(sorted(list(_REGISTRY) + list(_ALIASES)))
        raise ConfigError(f"Unknown architecture '{name}'; choose one of: {known}.")
    return name


def list_models() -> List[ArchEntry]:
    _ensure_builtins_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def create_model(name: str, num_classes: int, trust_code: bool = True, **arch_args):
    """Build an architecture with freshly initialised weights: a registered name or an external one
    (``torchvision:NAME``, ``smp:ARCH:ENCODER``, ``file.py:function``; the last runs the user's code,
    so callers rebuilding it from a checkpoint pass ``trust_code`` only with --trust-checkpoint).

    >>> model = create_model("unet", num_classes=8, base_channels=8)
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}.")
    from edgeseg.arch.external import build_external, is_external

    if is_external(name):
        return build_external(canonical_name(name), num_classes, trust_code=trust_code, **arch_args)
    entry = _REGISTRY[canonical_name(name)]
    return entry.build(num_classes, **arch_args)
