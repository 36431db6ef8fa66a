"""The parts of pruning that need data: Taylor gradients, the slimming phase, KD recovery."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from edgeseg.data.dataset import ClassCount
from edgeseg.spec import DatasetInfo, InputSpec


@dataclass
class PruneData:
    """The training split (augmented), the val split (if any) and what the dataset says about itself."""

    train_set: torch.utils.data.Dataset
    val_set: Optional[torch.utils.data.Dataset]
    plain_train_set: torch.utils.data.Dataset  # the same images without augmentation (for gradients)
    info: DatasetInfo
    train_split: Optional[object] = None  # the SegmentationSplit behind train_set (class frequencies are counted on it)


def load_prune_data(data: str, spec: InputSpec, model_classes: ClassCount, ignore_index: int = 255,
                    augment: str = "standard") -> PruneData:
    """``data``'s splits; ``model_classes`` (a ClassCount: the model's) decides the class count where no
    dataset.yaml does, and is refused where one says another. ``augment`` names the training set's augmentation."""
    from edgeseg.data.torch_dataset import SegmentationDataset, augmentation
    from edgeseg.training.data import training_splits

    train_split, val_split = training_splits(data, classes=model_classes, ignore_index=ignore_index)
    plain = SegmentationDataset(train_split, spec)
    augmented = SegmentationDataset(train_split, spec, augmentation(augment))
    val_set = SegmentationDataset(val_split, spec) if val_split is not None else None
    return PruneData(augmented, val_set, plain, train_split.info, train_split)


class TaylorGradients:
    """Fills .grad with the cross-entropy gradient (weighted per class by ``class_weights``, if given) over a
    fixed, seeded subset of training images."""

    def __init__(self, data: PruneData, images: int = 64, batch_size: int = 8, seed: int = 0,
                 class_weights: Optional[List[float]] = None):
        order = torch.randperm(len(data.plain_train_set), generator=torch.Generator().manual_seed(seed))
        subset = torch.utils.data.Subset(data.plain_train_set, order[:images].tolist())
        self.batches = list(torch.utils.data.DataLoader(subset, batch_size=batch_size))  # decoded once, reused per step
        self.ignore_index = data.info.ignore_index
        self.class_weights = class_weights

    def __call__(self, model: nn.Module) -> int:
        from edgeseg.pruning.importance import accumulate_gradients

        return accumulate_gradients(model, self.batches, self.ignore_index, self.class_weights)


def sparsity_phase(net: nn.Module, data: PruneData, num_classes: int, *, epochs: int, strength: float,
                   batch_size: int, lr: Optional[float], seed: int, threads: Optional[int],
                   class_weights: Optional[List[float]] = None) -> List[dict]:
    """Network slimming's training phase: cross-entropy + ``strength`` x sum |BN gamma|.

    The L1 term drives the scales of channels the task does not need towards zero, so
    that bn-scale importance afterwards separates them cleanly from the rest.
    """
    from edgeseg.pruning.importance import bn_l1_penalty
    from edgeseg.training.loop import TrainConfig, fit

    bn_l1_penalty(net)  # a model without BatchNorm is refused before any training starts
    # the labels' cross-entropy weighed as the model was trained (train --class-weights), so slimming does not
    # drive the channels of rare classes towards zero before they are ranked
    weight = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)

    def loss_fn(logits, _images, labels):
        ce = nn.functional.cross_entropy(logits, labels, ignore_index=data.info.ignore_index,
                                         weight=None if weight is None else weight.to(logits.device))
        l1 = bn_l1_penalty(net)
        return ce + strength * l1, {"ce": ce.item(), "bn_l1": l1.item()}

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr if lr is not None else 5e-4, seed=seed,
                         val_every=max(1, epochs), threads=threads, tensorboard=False)
    return fit(net, data.train_set, data.val_set, loss_fn, config, num_classes=num_classes,
               ignore_index=data.info.ignore_index, description="sparsity (slimming)")


def finetune_config(epochs: int, batch_size: int = 8, lr: Optional[float] = None, seed: int = 0,
                    threads: Optional[int] = None):
    """prune's fine-tuning keywords as the one TrainConfig the loop takes: from trained weights, so half the
    from-scratch AdamW learning rate by default, validated once at the end, no TensorBoard."""
    from edgeseg.training.loop import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr if lr is not None else 5e-4, seed=seed,
                       val_every=max(1, epochs), threads=threads, tensorboard=False)


def distillation_finetune(net: nn.Module, teacher: nn.Module, data: PruneData, num_classes: int, config, *,
                          checkpoint_to: Optional[str] = None, resume: bool = False,
                          class_weights: Optional[List[float]] = None) -> List[dict]:
    """Recover accuracy: cross-entropy (weighted per class by ``class_weights``) + pixel-wise KL from the
    frozen ``teacher`` (T=4), trained with ``config`` (a TrainConfig; ``finetune_config`` builds prune's default).

    With ``checkpoint_to`` the state and a CSV log are written after every epoch, as
    ``train`` writes them, so a long fine-tuning (120 epochs in the CamVid story) that is
    killed continues with ``resume`` instead of starting over.
    """
    from edgeseg.distillation.api import kd_loss
    from edgeseg.training.loop import fit

    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return fit(net, data.train_set, data.val_set, kd_loss(teacher, data.info.ignore_index, 4.0, 1.0, class_weights),
               config, num_classes=num_classes, ignore_index=data.info.ignore_index, description="fine-tune pruned",
               checkpoint_to=checkpoint_to, resume=resume,
               loss_settings={"class_weights": None if class_weights is None else list(class_weights)})
