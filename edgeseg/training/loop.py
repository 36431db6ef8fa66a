"""The training loop shared by ``train``, ``distill`` and the fine-tuning after ``prune``.

The caller provides the loss as a function of (student logits, images, labels), which is
the only thing that differs between plain training and distillation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from edgeseg.console import progress_bar, say
from edgeseg.data.torch_dataset import poly_lr, seed_everything
from edgeseg.errors import ConfigError
from edgeseg.metrics import confusion_matrix, mean_iou

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, Dict[str, float]]]

DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.01}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``lr=None`` takes the optimizer's usual default."""

    epochs: int = 30
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: Optional[float] = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    val_every: int = 5
    seed: int = 0
    threads: Optional[int] = None

    def __post_init__(self):
        if self.optimizer not in DEFAULT_LR:
            raise ConfigError(f"Unknown optimizer '{self.optimizer}'; choose adamw or sgd.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be at least 1.")

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.base_lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=config.base_lr, weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate_miou(model: nn.Module, dataset, num_classes: int, ignore_index: int, batch_size: int = 8) -> float:
    """mIoU (%) at the model input size over a non-augmented dataset, from one confusion matrix."""
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for images, labels in loader:
        pred = model(images).argmax(1)
        confusion += confusion_matrix(pred.numpy(), labels.numpy(), num_classes, ignore_index)
    return mean_iou(confusion)


def fit(model: nn.Module, train_set, val_set, loss_fn: LossFn, config: TrainConfig, *, num_classes: int,
        ignore_index: int, description: str, extra_params: Optional[List[nn.Parameter]] = None) -> List[dict]:
    """Train ``model`` in place; return one record per epoch (loss parts, lr, val mIoU when measured)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    if len(train_set) < config.batch_size:
        raise ConfigError(f"The training split has {len(train_set)} images, fewer than --batch-size "
                          f"{config.batch_size}; lower --batch-size.")
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         generator=generator)
    optimizer = make_optimizer(list(model.parameters()) + list(extra_params or []), config)
    total_steps = config.epochs * len(loader)
    warmup_steps = int(config.warmup_epochs * len(loader))
    history: List[dict] = []
    step = 0
    with progress_bar(description, total_steps) as advance:
        for epoch in range(1, config.epochs + 1):
            model.train()
            sums: Dict[str, float] = {}
            started = time.perf_counter()
            for images, labels in loader:
                lr = poly_lr(config.base_lr, step, total_steps, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = model(images)
                loss, parts = loss_fn(logits, images, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value
                step += 1
                advance(1, status=f"epoch {epoch}/{config.epochs} loss {loss.item():.3f}")
            record = {"epoch": epoch, "lr": lr, "seconds": round(time.perf_counter() - started, 2),
                      **{k: round(v / len(loader), 5) for k, v in sums.items()}}
            if val_set is not None and (epoch % config.val_every == 0 or epoch == config.epochs):
                record["val_miou"] = round(evaluate_miou(model, val_set, num_classes, ignore_index), 3)
                say(f"  epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in record.items() if k != "epoch"))
            history.append(record)
    model.eval()
    return history
