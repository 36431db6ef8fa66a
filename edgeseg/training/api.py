"""``edgeseg train``: train a registered architecture from scratch on a dataset."""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import torch
from torch.nn import functional as F

from edgeseg.arch import canonical_name, create_model
from edgeseg.arch.profile import count_macs, count_params
from edgeseg.checkpoint import save_checkpoint
from edgeseg.console import say
from edgeseg.data.torch_dataset import AugmentConfig, SegmentationDataset
from edgeseg.fileio import check_output_path
from edgeseg.sidecar import write_sidecar
from edgeseg.training.data import dataset_reference, default_input_spec, training_splits
from edgeseg.training.loop import TrainConfig, fit
from edgeseg.training.state import state_path


def cross_entropy_loss(ignore_index: int):
    def loss_fn(logits, _images, labels):
        loss = F.cross_entropy(logits, labels, ignore_index=ignore_index)
        return loss, {"ce": loss.item()}

    return loss_fn


def train(arch: str, data: str, out: str, *, epochs: int = 30, batch_size: int = 8, optimizer: str = "adamw",
          lr: Optional[float] = None, weight_decay: float = 1e-4, input_size: Optional[str] = None, seed: int = 0,
          val_every: int = 5, arch_args: Optional[dict] = None, threads: Optional[int] = None,
          resume: bool = False, grad_clip: float = 0.0, ema_decay: float = 0.0, warmup_epochs: float = 0.0) -> dict:
    """Train ``arch`` from scratch on ``data`` and write an edgeseg checkpoint to ``out``.

    Cross-entropy with the dataset's ignore index, poly LR, joint scale/crop/flip/colour
    augmentation. Returns the checkpoint's sidecar.

    >>> edgeseg.train("unet", "synthetic", "teacher.pt", epochs=2)  # doctest: +SKIP
    """
    check_output_path(out)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         val_every=val_every, seed=seed, threads=threads, grad_clip=grad_clip, ema_decay=ema_decay,
                         warmup_epochs=warmup_epochs)
    arch = canonical_name(arch)
    train_split, val_split = training_splits(data)
    info = train_split.info
    spec = default_input_spec(train_split, input_size)
    torch.manual_seed(seed)
    model = create_model(arch, info.num_classes, **(arch_args or {}))
    say(f"Training {arch} from scratch on {len(train_split)} images of {train_split.root} at "
        f"{spec.height}x{spec.width} ({info.num_classes} classes)")
    train_set = SegmentationDataset(train_split, spec, AugmentConfig())
    val_set = SegmentationDataset(val_split, spec) if val_split is not None else None
    history = fit(model, train_set, val_set, cross_entropy_loss(info.ignore_index), config,
                  num_classes=info.num_classes, ignore_index=info.ignore_index, description=f"train {arch}",
                  checkpoint_to=out, resume=resume)
    meta = {"stage": "train", "config": asdict(config), "history": history}
    save_checkpoint(out, model, arch=arch, num_classes=info.num_classes, input_spec=spec, dataset=info,
                    arch_args=arch_args, meta=meta)
    sidecar = write_sidecar(out, "checkpoint", input_spec=spec, dataset=info, stage="train",
                            model=model_facts(model, arch, info.num_classes, spec),
                            training={"data": dataset_reference(data), "config": asdict(config),
                                      "val_miou": history[-1].get("val_miou")})
    state_path(out).unlink(missing_ok=True)  # the run finished: the final checkpoint replaces the resume state
    say(f"Wrote {out}")
    return sidecar


def model_facts(model, arch: str, num_classes: int, spec) -> dict:
    return {"arch": arch, "num_classes": num_classes, "params": count_params(model),
            "macs": count_macs(model, spec.height, spec.width)}
