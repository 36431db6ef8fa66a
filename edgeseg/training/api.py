"""``edgeseg train``: train a registered architecture from scratch on a dataset."""
from __future__ import annotations

import copy
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch
from torch.nn import functional as F

from edgeseg.arch import canonical_name, create_model
from edgeseg.arch.backbones import check_backbone_option, load_backbone_weights
from edgeseg.arch.profile import count_macs, count_params
from edgeseg.checkpoint import save_checkpoint
from edgeseg.console import say
from edgeseg.data.dataset import DEFAULT_IGNORE_INDEX, ClassCount
from edgeseg.errors import ConfigError
from edgeseg.data.torch_dataset import SegmentationDataset, augmentation
from edgeseg.fileio import check_output_path
from edgeseg.sidecar import write_sidecar
from edgeseg.training import class_weights as weighting
from edgeseg.training import distributed
from edgeseg.training.class_weights import as_tensor
from edgeseg.training.data import dataset_reference, default_input_spec, training_splits
from edgeseg.training.loop import TrainConfig, fit, training_config
from edgeseg.training.state import state_path


def cross_entropy_loss(ignore_index: int, class_weights=None):
    """Cross-entropy with the dataset's ignore index, weighted per class when ``class_weights`` (a list) says so."""
    weight = as_tensor(class_weights)

    def loss_fn(logits, _images, labels):
        loss = F.cross_entropy(logits, labels, ignore_index=ignore_index,
                               weight=None if weight is None else weight.to(logits.device))
        return loss, {"ce": loss.item()}

    return loss_fn


def train(arch: str, data: str, out: str, *, epochs: int = 30, batch_size: int = 8, optimizer: str = "adamw",
          lr: Optional[float] = None, weight_decay: float = 1e-4, input_size: Optional[str] = None, seed: int = 0,
          val_every: int = 5, arch_args: Optional[dict] = None, threads: Optional[int] = None,
          resume: bool = False, grad_clip: float = 0.0, ema_decay: float = 0.0, warmup_epochs: float = 0.0,
          device: str = "cpu", amp: bool = True, sync_bn: bool = False, tensorboard: bool = True,
          backbone_weights: Optional[str] = None, weights: Optional[str] = None, num_classes: Optional[int] = None,
          ignore_index: int = DEFAULT_IGNORE_INDEX, class_weights: Optional[str] = None,
          training: Optional[TrainConfig] = None) -> dict:
    """Train ``arch`` on ``data`` and write an edgeseg checkpoint to ``out``.

    The class count and ignore index come from ``data``'s dataset.yaml (or its standard
    layout: VOC, ADE20K, Cityscapes); ``num_classes`` and ``ignore_index`` say them for a
    folder without one (a dataset.yaml's values win; a different ``num_classes`` is refused).

    ``backbone_weights`` starts the encoder from ImageNet: "imagenet" (torchvision's
    weights, from its local cache only), a classification checkpoint file, or "scratch";
    by default ImageNet when it is already cached, else scratch (see arch/backbones.py).
    ``weights`` starts the whole model from torchvision's pretrained segmentation weights
    of that name (``arch`` torchvision:NAME, e.g. COCO_WITH_VOC_LABELS_V1), the class
    layers re-initialised when the data has other classes.

    ``class_weights`` weighs the cross-entropy per class: "median-frequency" or
    "sqrt-median-frequency" (counted on the training labels; see training/class_weights.py)
    or one weight per class "W0,W1,..."; None or "none" for plain cross-entropy. The weights
    are recorded, and prune's fine-tuning of this checkpoint reuses the mode.

    Cross-entropy with the dataset's ignore index, poly LR, joint scale/crop/flip/colour
    augmentation. The best validated weights also go to ``<out stem>.best.pt``. Under
    ``torchrun`` the processes share the work (DDP) and rank 0 writes. ``training`` gives
    the loop's options (epochs, batch size, optimizer, ...) as one TrainConfig instead of
    the keywords of the same names. Returns the checkpoint's sidecar.

    >>> edgeseg.train("unet", "synthetic", "teacher.pt", epochs=2)  # doctest: +SKIP
    """
    check_output_path(out)
    weighting.check(class_weights)
    config = training_config(training, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                             weight_decay=weight_decay, val_every=val_every, seed=seed, threads=threads,
                             grad_clip=grad_clip, ema_decay=ema_decay, warmup_epochs=warmup_epochs, device=device,
                             amp=amp, sync_bn=sync_bn, tensorboard=tensorboard)
    arch = canonical_name(arch)
    given = ClassCount(num_classes, "--num-classes", "change --num-classes") if num_classes else None
    train_split, val_split = training_splits(data, classes=given, ignore_index=ignore_index)
    info = train_split.info
    spec = default_input_spec(train_split, input_size)
    torch.manual_seed(config.seed)
    model = create_model(arch, info.num_classes, **(arch_args or {}))
    if weights and backbone_weights:
        raise ConfigError("--weights already initialises the whole model; drop --backbone-weights.")
    if weights:
        from edgeseg.arch.backbones import load_segmentation_weights

        load_segmentation_weights(model, arch, weights, allow_new_classes=True)
    backbone = None if weights else load_backbone_weights(model, arch, check_backbone_option(backbone_weights))
    if backbone is not None:  # the model is normalised as its pretrained weights were
        spec = replace(spec, mean=backbone.mean, std=backbone.std)
    main_process = distributed.current().is_main
    loss_weights = weighting.resolve(class_weights, train_split, info.num_classes)
    if main_process:
        start = "from torchvision's " + weights if weights else "from a pretrained backbone" if backbone else \
            "from scratch"
        say(f"Training {arch} {start} on {len(train_split)} images of {train_split.root} at "
            f"{spec.height}x{spec.width} ({info.num_classes} classes)")
        if loss_weights is not None:
            say(f"Class weights ({class_weights if class_weights in weighting.MODES else 'given'}): "
                f"{weighting.describe(loss_weights, info.classes or [str(i) for i in range(info.num_classes)])}")
    train_set = SegmentationDataset(train_split, spec, augmentation(config.augment))
    val_set = SegmentationDataset(val_split, spec) if val_split is not None else None
    writer = ResultWriter(out, arch, info, spec, data, config, "train", arch_args=arch_args,
                          extra={"backbone_weights": backbone.to_dict() if backbone else None, "weights": weights,
                                 "class_weights": {"mode": class_weights or weighting.NONE, "weights": loss_weights}})
    history = fit(model, train_set, val_set, cross_entropy_loss(info.ignore_index, loss_weights), config,
                  num_classes=info.num_classes, ignore_index=info.ignore_index, description=f"train {arch}",
                  checkpoint_to=out, resume=resume, on_best=writer.best,
                  loss_settings={"class_weights": loss_weights})
    return writer.final(model, history) if main_process else {}


class ResultWriter:
    """Writes what a training verb produces: the final checkpoint (+ sidecar) and the best-validated one."""

    def __init__(self, out: str, arch: str, info, spec, data: str, config: TrainConfig, stage: str, *,
                 arch_args: Optional[dict] = None, parent: Optional[str] = None, extra: Optional[dict] = None):
        self.out, self.arch, self.info, self.spec, self.data = out, arch, info, spec, data
        self.config, self.stage, self.arch_args, self.parent = config, stage, arch_args, parent
        self.extra = extra or {}  # e.g. {"distill": settings}: stored in meta and the sidecar's training block

    @property
    def best_path(self) -> Path:
        out = Path(self.out)
        return out.with_name(f"{out.stem}.best{out.suffix or '.pt'}")

    def _write(self, path, model, history: list, val_miou) -> dict:
        if next(model.parameters()).device.type != "cpu":  # the best weights are saved mid-training, on the GPU
            model = copy.deepcopy(model).cpu()
        meta = {"stage": self.stage, "config": asdict(self.config), **self.extra, "history": history}
        save_checkpoint(path, model, arch=self.arch, num_classes=self.info.num_classes, input_spec=self.spec,
                        dataset=self.info, arch_args=self.arch_args, meta=meta)
        return write_sidecar(path, "checkpoint", input_spec=self.spec, dataset=self.info, parent=self.parent,
                             stage=self.stage, model=model_facts(model, self.arch, self.info.num_classes, self.spec),
                             training={"data": dataset_reference(self.data), "config": asdict(self.config),
                                       **self.extra, "val_miou": val_miou})

    def best(self, model, record: dict) -> None:
        """``fit``'s on_best hook: keep the weights of the best validation so far."""
        was_training = model.training
        self._write(self.best_path, model, [record], record["val_miou"])
        model.train(was_training)

    def final(self, model, history: list) -> dict:
        sidecar = self._write(self.out, model, history, history[-1].get("val_miou") if history else None)
        state_path(self.out).unlink(missing_ok=True)  # the run finished: the final checkpoint replaces the state
        say(f"Wrote {self.out}" + (f" (best validation: {self.best_path.name})" if self.best_path.exists() else ""))
        return sidecar


def model_facts(model, arch: str, num_classes: int, spec) -> dict:
    return {"arch": arch, "num_classes": num_classes, "params": count_params(model),
            "macs": count_macs(model, spec.height, spec.width)}
