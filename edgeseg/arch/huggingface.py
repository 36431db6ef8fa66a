"""Hugging Face segmentation models built by transformers: from a folder, or from a checkpoint's recorded config.

``PixelLogits`` makes a transformers model return what every edgeseg model returns:
logits at the input's size (transformers' models return a ``SemanticSegmenterOutput``
whose logits are at a fraction of the input, 1/4 for SegFormer). Reading the folder's
facts is ``edgeseg.huggingface`` (torch-free).
"""
from __future__ import annotations

import json
from typing import Optional

import torch.nn.functional as F
from torch import nn

from edgeseg.errors import ConfigError, InputFileError, MissingDependencyError, UntrustedFileError, option
from edgeseg.huggingface import PREFIX, SUPPORTED, FolderFacts, find_folder, read_folder


# Classes Torch-Pruning's dependency graph prunes into a working model (the attention, norms and residual stream
# kept whole). BEiT/Data2VecVision came out broken (their relative position tables tie widths the graph does not
# see) and DPT's graph took longer than ten minutes to build, in the review of 2026-12-03; MobileViTV2 is untried.
PRUNABLE = ("SegformerForSemanticSegmentation", "MobileViTForSemanticSegmentation", "UperNetForSemanticSegmentation")


def check_prunable(arch: str) -> None:
    """One sentence where pruning a Hugging Face class is known to fail or is untried."""
    name = arch[len(PREFIX):]
    if arch.startswith(PREFIX) and name not in PRUNABLE:
        raise ConfigError(f"edgeseg does not prune {name} (it prunes {', '.join(PRUNABLE)}); distil it "
                          f"into a smaller student instead (edgeseg distill FOLDER --student ...).")


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
    _refuse_pickled_weights(facts.folder)
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


def _refuse_pickled_weights(folder) -> None:
    """Weights only in pytorch_model.bin (a pickle): read with weights_only=True here first, so no transformers
    release, old or new, can unpickle code from it; safetensors files hold tensors alone and need no check."""
    import pickle

    import torch

    if any(folder.glob("*.safetensors")):
        return  # transformers prefers them
    for weights in sorted(folder.glob("pytorch_model*.bin")):
        try:
            torch.load(weights, map_location="meta", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UntrustedFileError(f"{weights} holds pickled Python objects besides tensors, which could run code "
                                     f"when loaded; ask for the model in safetensors (save_pretrained's default) "
                                     f"or convert it where you trust it.") from exc
        except Exception as exc:  # truncated or not a torch file
            raise InputFileError(f"{weights} is not a readable PyTorch weights file ({type(exc).__name__}); "
                                 f"download the model again.") from exc


def build(architecture: str, num_classes: int, config: Optional[dict] = None):
    """``hf:<class>`` with fresh weights from a recorded config (a checkpoint rebuilding its model)."""
    if not config:
        raise ConfigError(f"hf:{architecture} is built from a model folder's config; give the folder itself as the "
                          f"model instead of {option('--arch', 'ModelFacts(arch=...)')}.")
    model_class = _model_class(architecture)
    config = dict(config, num_labels=num_classes)
    if len(config.get("id2label") or {}) != num_classes:
        config["id2label"] = {str(i): f"class{i}" for i in range(num_classes)}
        config["label2id"] = {f"class{i}": i for i in range(num_classes)}
    config_object = model_class.config_class.from_dict(config)
    return PixelLogits(model_class(config_object).eval())


class PixelLogits(nn.Module):
    """A transformers segmentation model as edgeseg expects every model: logits at the input's size.

    transformers' models return a ``SemanticSegmenterOutput`` whose logits are at a
    fraction of the input (1/4 for SegFormer); they are upsampled here, bilinearly, as
    transformers' own post-processing does before its argmax.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
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
