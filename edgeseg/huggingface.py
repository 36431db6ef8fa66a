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
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from edgeseg.errors import ConfigError, InputFileError, MissingDependencyError

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
        return path if (path / "config.json").is_file() else None
    if path.exists() or str(path).count("/") != 1 or path.suffix:
        return None
    cached = _hub_cache() / ("models--" + str(path).replace("/", "--"))
    snapshot = _snapshot(cached) if cached.is_dir() else None
    return snapshot if snapshot is not None and (snapshot / "config.json").is_file() else None


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


def _input_size(processor: dict) -> Optional[Tuple[int, int]]:
    """The size the image processor resizes (or crops) to; a shortest-edge rule names no fixed size."""
    for key in ("crop_size", "size"):
        size = processor.get(key)
        if isinstance(size, dict) and "height" in size and "width" in size:
            if key == "crop_size" and not processor.get("do_center_crop", True):
                continue
            return int(size["height"]), int(size["width"])
        if isinstance(size, int) and key == "size":
            return int(size), int(size)
    return None


def _normalisation(processor: dict):
    """mean/std in 0-255 units: transformers rescales by 1/255 and then normalises in 0-1 units."""
    from edgeseg.spec import IMAGENET_MEAN, IMAGENET_STD

    if not processor:
        return IMAGENET_MEAN, IMAGENET_STD
    scale = float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0
    if processor.get("do_normalize", True) and processor.get("image_mean") is not None:
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
    processor = _read_json(processor_path, "preprocessor_config.json") if processor_path.is_file() else {}
    mean, std = _normalisation(processor)
    return FolderFacts(folder=folder, architecture=architecture, config=config, num_classes=num_classes,
                       classes=classes, ignore_index=int(config.get("semantic_loss_ignore_index", 255)),
                       input_size=_input_size(processor), mean=mean, std=std,
                       color="BGR" if processor.get("do_flip_channel_order") else "RGB")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("Hugging Face models need transformers; pip install 'edgeseg[hf]' (everything "
                                     "else in edgeseg works without it).") from None
    return transformers


def _model_class(architecture: str):
    if architecture not in SUPPORTED:
        raise ConfigError(f"hf:{architecture} is not a Hugging Face class edgeseg runs; choose one of "
                          f"{', '.join(SUPPORTED)}.")
    transformers = _transformers()
    model_class = getattr(transformers, architecture, None)
    if model_class is None:
        raise MissingDependencyError(f"transformers {transformers.__version__} has no {architecture}; upgrade it "
                                     f"(pip install -U transformers).")
    return model_class


class _quiet_transformers:
    """transformers' own warnings and progress bars off while it loads (edgeseg reports what it loaded)."""

    def __enter__(self):
        from transformers.utils import logging

        self.level = logging.get_verbosity()
        logging.set_verbosity_error()
        logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging

        logging.set_verbosity(self.level)
        logging.enable_progress_bar()


def plain_config(config) -> dict:
    """A transformers config as JSON-able primitives (what an edgeseg checkpoint may hold under weights_only)."""
    return json.loads(config.to_json_string(use_diff=False))


def load_folder(facts: FolderFacts, num_classes: Optional[int] = None):
    """The folder's model with its weights, wrapped to return full-resolution logits; local files only.

    ``num_classes`` other than the folder's starts a new classifier (the rest keeps its
    weights), as transformers' ``ignore_mismatched_sizes`` does when fine-tuning.
    """
    model_class = _model_class(facts.architecture)
    options = {}
    if num_classes is not None and num_classes != facts.num_classes:
        options = dict(num_labels=num_classes, id2label={i: f"class{i}" for i in range(num_classes)},
                       label2id={f"class{i}": i for i in range(num_classes)}, ignore_mismatched_sizes=True)
    with _quiet_transformers():
        try:
            net = model_class.from_pretrained(str(facts.folder), local_files_only=True, **options)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputFileError(f"transformers could not load {facts.folder} ({first[:300]}); check that the "
                                 f"folder is complete (config.json and its weights).") from exc
    return PixelLogits(net.eval())


def build(architecture: str, num_classes: int, config: Optional[dict] = None):
    """``hf:<class>`` with fresh weights from a recorded config (a checkpoint rebuilding its model)."""
    if not config:
        raise ConfigError(f"hf:{architecture} is built from a model folder's config; give the folder itself as the "
                          f"model instead of --arch.")
    model_class = _model_class(architecture)
    config = dict(config, num_labels=num_classes)
    if len(config.get("id2label") or {}) != num_classes:
        config["id2label"] = {str(i): f"class{i}" for i in range(num_classes)}
        config["label2id"] = {f"class{i}": i for i in range(num_classes)}
    config_object = model_class.config_class.from_dict(config)
    return PixelLogits(model_class(config_object).eval())


def _torch_module():
    from torch import nn

    return nn.Module


class PixelLogits(_torch_module()):
    """A transformers segmentation model as edgeseg expects every model: logits at the input's size.

    transformers' models return a ``SemanticSegmenterOutput`` whose logits are at a
    fraction of the input (1/4 for SegFormer); they are upsampled here, bilinearly, as
    transformers' own post-processing does before its argmax.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        import torch.nn.functional as F

        out = self.net(x)
        logits = out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]
        if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def unprunable_layers(self):
        """Layers whose widths attention heads, the residual stream or a norm fix (pruning keeps them whole).

        What is left prunable is what edgeseg's own SegFormer prunes: the hidden width of
        every Mix-FFN and the decoder's per-stage MLPs.
        """
        from torch import nn

        keep = []
        for module in self.net.modules():
            kind = type(module).__name__
            # the norms fix the residual stream's width (so the Mix-FFN's second linear keeps its output)
            if isinstance(module, nn.LayerNorm) or "Attention" in kind or "Embeddings" in kind:
                keep.append(module)
        return keep


def is_segmenter_output(out) -> bool:
    """Whether a module's output is a transformers ModelOutput carrying ``logits`` (a pickled HF model)."""
    return hasattr(out, "keys") and "logits" in out.keys()


def model_name(facts: FolderFacts) -> str:
    return PREFIX + facts.architecture


def student_from(name, num_classes: int):
    """A distillation student named by a Hugging Face folder: (model, arch, arch_args), or None for any other name.

    The student starts from the folder's weights; for another class count its classifier
    starts anew (the encoder and decoder keep theirs), as fine-tuning in transformers does.
    """
    folder = find_folder(name)
    if folder is None:
        return None
    model = load_folder(read_folder(folder), num_classes)
    return model, PREFIX + type(model.net).__name__, {"config": plain_config(model.net.config)}
