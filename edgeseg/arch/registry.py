"""One registry of architectures: ``@register`` a builder, ``create_model(name, num_classes=...)`` builds it.

Every registered model takes a float NCHW batch and returns logits of shape
(N, num_classes, H, W) at the input's resolution, so every later stage can treat all
architectures alike.
"""
from __future__ import annotations

from dataclasses import dataclass
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
    from edgeseg.arch import torchvision_models, unet  # noqa: F401


def canonical_name(name: str) -> str:
    _ensure_builtins_loaded()
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        known = ", ".join(sorted(list(_REGISTRY) + list(_ALIASES)))
        raise ConfigError(f"Unknown architecture '{name}'; choose one of: {known}.")
    return name


def list_models() -> List[ArchEntry]:
    _ensure_builtins_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def create_model(name: str, num_classes: int, **arch_args):
    """Build a registered architecture with freshly initialised weights.

    >>> model = create_model("unet", num_classes=8, base_channels=8)
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}.")
    entry = _REGISTRY[canonical_name(name)]
    return entry.build(num_classes, **arch_args)
