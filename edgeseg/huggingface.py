"""Hugging Face segmentation models, read offline from a ``save_pretrained`` folder or the hub cache.

A folder with ``config.json`` and its weights (``model.safetensors``, shards, or
``pytorch_model.bin``) says everything a sidecar would: the transformers class
(``architectures``), the classes (``id2label``), the ignore index, and, in
``preprocessor_config.json``, the input size and normalisation. So it enters every verb
that takes a model with no ``--arch``. The model is built by transformers itself (the
``hf`` extra), from local files only: nothing is ever downloaded, and no remote code runs.

Only the classes whose output is per-pixel logits are taken (``SUPPORTED``). Most of
them return logits at 1/4 (SegFormer) or other reduced resolutions; ``PixelLogits``
upsamples them to the input size (bilinear, ``align_corners=False``, as transformers'
``post_process_semantic_segmentation`` does) inside the model, so the export, every
runner and every metric take the argmax at full resolution instead of upsampling a
blocky label map.

An edgeseg checkpoint of such a model (after prune or distill) records the architecture
as ``hf:<transformers class>`` and the folder's config as a plain dict, so it rebuilds
without the folder and loads with ``weights_only=True``.

This module reads folders and is torch-free (the deploy side asks it whether a path is
a Hugging Face folder); building the model is ``edgeseg.arch.huggingface``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from edgeseg.errors import ConfigError, InputFileError

# transformers classes whose output.logits are per-pixel class scores (N, classes, h, w)
SUPPORTED = ("SegformerForSemanticSegmentation", "UperNetForSemanticSegmentation", "DPTForSemanticSegmentation",
             "BeitForSemanticSegmentation", "MobileViTForSemanticSegmentation",
             "MobileViTV2ForSemanticSegmentation", "Data2VecVisionForSemanticSegmentation")
PREFIX = "hf:"
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def _hub_cache() -> Path:
    """Where huggingface_hub keeps downloaded repositories (its own environment variables, in its order)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def _snapshot(repo_dir: Path) -> Optional[Path]:
    """A hub-cache repository folder (``models--org--name``) -> the snapshot its ``refs/main`` names."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def find_folder(path) -> Optional[Path]:
    """The Hugging Face model folder ``path`` names, or None when it names none.

    Accepted: a ``save_pretrained`` folder, a hub-cache snapshot, a hub-cache repository
    folder (``models--org--name``), or a repository id (``org/name``) that is not a path
    here but is in the local hub cache.
    """
    path = Path(path)
    if path.is_dir():
        if path.name.startswith("models--"):
            path = _snapshot(path) or path
        return path if is_transformers_config(path / "config.json") else None
    if path.exists() or str(path).count("/") != 1:  # an id may hold dots: org/mobilevitv2-1.0-voc-deeplabv3
        return None
    cached = _hub_cache() / ("models--" + str(path).replace("/", "--"))
    snapshot = _snapshot(cached) if cached.is_dir() else None
    return snapshot if snapshot is not None and is_transformers_config(snapshot / "config.json") else None


def display_name(folder: Path) -> str:
    """The model's own name: the folder's, or for a hub-cache snapshot its repository's (not the commit hash)."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name


def default_output(folder: Path, suffix: str) -> Path:
    """Where a verb writes what it makes from a folder when not told: beside the folder, keeping dots in its name
    (mobilevitv2-1.0-voc), or in the working folder for a hub-cache snapshot (never inside the cache)."""
    folder = Path(folder)
    if folder.parent.name == "snapshots":
        return Path.cwd() / (display_name(folder) + suffix)
    return folder.parent / (folder.name + suffix)


def is_transformers_config(path: Path) -> bool:
    """A config.json transformers wrote (it names a model_type or architectures); timm's and smp's do not."""
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return True  # unreadable: read_folder says so in one sentence
    return isinstance(config, dict) and bool(config.get("model_type") or config.get("architectures"))


@dataclass(frozen=True)
class FolderFacts:
    """What a Hugging Face folder says about its model, in edgeseg's terms."""

    folder: Path
    architecture: str  # the transformers class
    config: dict
    num_classes: int
    classes: Tuple[str, ...]
    ignore_index: int
    input_size: Optional[Tuple[int, int]]
    mean: Tuple[float, float, float]  # 0-255 units
    std: Tuple[float, float, float]
    color: str


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path} is not readable JSON ({exc}); restore the {what} from the model's source.") \
            from exc


# What an image processor class does for a key its saved config leaves out (or saves as null): transformers 5 writes
# MobileViT's image_mean/std without do_normalize, and MobileViT only rescales, to BGR, after a centre crop.
_GENERIC_DEFAULTS = {"do_rescale": True, "do_normalize": True, "do_center_crop": False,
                     "do_flip_channel_order": False}
_CLASS_DEFAULTS = {"MobileViT": {"do_normalize": False, "do_center_crop": True, "do_flip_channel_order": True}}


def processor_settings(processor: dict) -> dict:
    """The saved image processor config with its class's defaults filled in where it says nothing."""
    kind = str(processor.get("image_processor_type") or processor.get("feature_extractor_type") or "")
    defaults = dict(_GENERIC_DEFAULTS)
    for prefix, own in _CLASS_DEFAULTS.items():
        if kind.startswith(prefix):
            defaults.update(own)
    return {**defaults, **{k: v for k, v in processor.items() if v is not None}}


def _size(value) -> Optional[Tuple[int, int]]:
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    if isinstance(value, int):  # older configs: one number for a square
        return int(value), int(value)
    return None  # e.g. {"shortest_edge": 288}: a rule, not a size


def _input_size(processor: dict) -> Optional[Tuple[int, int]]:
    """The size the model sees: the centre crop where the processor crops, else the size it resizes to."""
    if processor.get("do_center_crop") and _size(processor.get("crop_size")):
        return _size(processor.get("crop_size"))
    return _size(processor.get("size"))


def _normalisation(processor: dict):
    """mean/std in 0-255 units: transformers rescales by 1/255 and then normalises in 0-1 units."""
    from edgeseg.spec import IMAGENET_MEAN, IMAGENET_STD

    if not processor:
        return IMAGENET_MEAN, IMAGENET_STD
    scale = float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale") else 1.0
    if processor.get("do_normalize") and processor.get("image_mean") is not None:
        mean = tuple(float(m) / scale for m in processor["image_mean"])
        std = tuple(float(s) / scale for s in processor["image_std"])
    else:  # MobileViT: rescale only
        mean, std = (0.0, 0.0, 0.0), (1.0 / scale,) * 3
    return mean, std


def read_folder(folder: Path) -> FolderFacts:
    """The facts of a Hugging Face folder, or one sentence saying why it is not a model edgeseg can run."""
    config = _read_json(folder / "config.json", "config.json")
    names = list(config.get("architectures") or [])
    architecture = next((n for n in names if n in SUPPORTED), None)
    if architecture is None:
        shown = ", ".join(names) or f"model_type {config.get('model_type', '?')}"
        raise ConfigError(f"{folder} holds a {shown}, which does not output per-pixel class logits; edgeseg takes "
                          f"Hugging Face {', '.join(SUPPORTED)}.")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise InputFileError(f"{folder} has config.json but no weights ({' or '.join(_WEIGHT_FILES[::2])}); "
                             f"save the model with save_pretrained, or copy its weights next to config.json.")
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    num_classes = int(config.get("num_labels") or len(id2label) or 0)
    if num_classes < 2:
        raise ConfigError(f"{folder}/config.json names {num_classes} labels; a segmentation model needs id2label "
                          f"with at least two classes.")
    classes = tuple(id2label.get(i, f"class{i}") for i in range(num_classes))
    processor_path = folder / "preprocessor_config.json"
    saved = _read_json(processor_path, "preprocessor_config.json") if processor_path.is_file() else {}
    processor = processor_settings(saved) if saved else {}
    mean, std = _normalisation(processor)
    return FolderFacts(folder=folder, architecture=architecture, config=config, num_classes=num_classes,
                       classes=classes, ignore_index=int(config.get("semantic_loss_ignore_index", 255)),
                       input_size=_input_size(processor), mean=mean, std=std,
                       color="BGR" if processor.get("do_flip_channel_order") else "RGB")


def model_name(facts: FolderFacts) -> str:
    return PREFIX + facts.architecture
