"""The training loop shared by ``train``, ``distill`` and the fine-tuning after ``prune``.

The caller provides the loss as a function of (student logits, images, labels), which is
the only thing that differs between plain training and distillation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
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
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 = off (e.g. 0.999)

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


class _Ema:
    """Exponential moving average of a model's weights (buffers copied), evaluated and saved instead of the raw model."""

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_value, value in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                ema_value.copy_(value)

    def state_dict(self):
        return self.model.state_dict()


def fit(model: nn.Module, train_set, val_set, loss_fn: LossFn, config: TrainConfig, *, num_classes: int,
        ignore_index: int, description: str, extra_params: Optional[List[nn.Parameter]] = None,
        checkpoint_to: Optional[str] = None, resume: bool = False) -> List[dict]:
    """Train ``model`` in place; return one record per epoch (loss parts, lr, val mIoU when measured).

    With ``checkpoint_to``, the full training state is written atomically after every
    epoch to ``<checkpoint_to>.state`` and a CSV log to ``<checkpoint_to>.log.csv``;
    ``resume`` continues from that state exactly. With EMA on, the averaged weights are
    validated and copied into ``model`` at the end.
    """
    from edgeseg.training.state import load_state, restore_rng, save_state, state_path

    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    if len(train_set) < config.batch_size:
        raise ConfigError(f"The training split has {len(train_set)} images, fewer than --batch-size "
                          f"{config.batch_size}; lower --batch-size.")
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         generator=generator)
    params = list(model.parameters()) + list(extra_params or [])
    optimizer = make_optimizer(params, config)
    ema = _Ema(model, config.ema_decay) if config.ema_decay else None
    total_steps = config.epochs * len(loader)
    warmup_steps = int(config.warmup_epochs * len(loader))
    history: List[dict] = []
    step, first_epoch = 0, 1
    state_file = state_path(checkpoint_to) if checkpoint_to else None
    if resume:
        if state_file is None or not state_file.exists():
            raise ConfigError(f"--resume found no training state {state_file}; start without --resume.")
        state = load_state(state_file)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.model.load_state_dict(state["ema"])
        restore_rng(state, generator)
        step, first_epoch, history = state["step"], state["epoch"] + 1, list(state["history"])
        say(f"Resuming after epoch {state['epoch']} of {config.epochs}")
    with progress_bar(description, total_steps) as advance:
        advance(step)
        for epoch in range(first_epoch, config.epochs + 1):
            model.train()
            sums: Dict[str, float] = {}
            started = time.perf_counter()
            lr = config.base_lr
            for images, labels in loader:
                lr = poly_lr(config.base_lr, step, total_steps, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = model(images)
                loss, parts = loss_fn(logits, images, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value
                step += 1
                advance(1, status=f"epoch {epoch}/{config.epochs} loss {loss.item():.3f}")
            record = {"epoch": epoch, "lr": lr, "seconds": round(time.perf_counter() - started, 2),
                      **{k: round(v / len(loader), 5) for k, v in sums.items()}}
            if val_set is not None and (epoch % config.val_every == 0 or epoch == config.epochs):
                evaluated = ema.model if ema is not None else model
                record["val_miou"] = round(evaluate_miou(evaluated, val_set, num_classes, ignore_index), 3)
                say(f"  epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in record.items() if k != "epoch"))
            history.append(record)
            if state_file is not None:
                save_state(state_file, model=model, optimizer=optimizer, epoch=epoch, step=step, history=history,
                           generator=generator, ema=ema)
                _write_csv(Path(str(checkpoint_to) + ".log.csv"), history)
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    model.eval()
    return history


def _write_csv(path: Path, history: List[dict]) -> None:
    import csv
    import io

    from edgeseg.fileio import write_text_atomic

    columns = list(dict.fromkeys(key for record in history for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buffer.getvalue())
