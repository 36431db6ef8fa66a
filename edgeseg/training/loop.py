"""The training loop shared by ``train``, ``distill`` and the fine-tuning after ``prune``.

The caller provides the loss as a function of (student logits, images, labels), which is
the only thing that differs between plain training and distillation.
"""
from __future__ import annotations

import contextlib
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
    """The training loop's options, one object; ``lr=None`` takes the optimizer's usual default.

    ``train``, ``distill`` and ``qat`` take it whole (``training=TrainConfig(epochs=3)``),
    ``prune`` for its fine-tuning (``finetune=``); train, distill and prune still take the
    same options as keywords. The CLI builds it once from the loop's options
    (cli/options.py ``pop_train_config``).
    """

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
    device: str = "cpu"  # "cuda" trains on the GPU (one per process under torchrun)
    amp: bool = True  # mixed precision, on CUDA only
    sync_bn: bool = False  # SyncBatchNorm across torchrun processes
    tensorboard: bool = True  # TensorBoard events next to the checkpoint
    augment: str = "standard"  # the training images' augmentation, a data/torch_dataset.py AUGMENTATIONS name

    def __post_init__(self):
        if self.optimizer not in DEFAULT_LR:
            raise ConfigError(f"Unknown optimizer '{self.optimizer}'; choose adamw or sgd.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be at least 1.")
        from edgeseg.data.torch_dataset import augmentation

        augmentation(self.augment)  # an unknown name is refused here, before any work

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


def training_config(training: Optional[TrainConfig], **keywords) -> TrainConfig:
    """The loop's options of a verb that takes them both ways: ``training`` whole, or as keywords.

    The keywords keep the Python API of train and distill working; given together with
    ``training``, which would win is unclear, so any keyword off its default is refused.
    """
    config = TrainConfig(**keywords)
    if training is None:
        return config
    default = TrainConfig()
    changed = [name for name in keywords if getattr(config, name) != getattr(default, name)]
    if changed:
        raise ConfigError(f"Give the training options once: training=TrainConfig(...) or the keywords "
                          f"({', '.join(changed)}), not both.")
    return training


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.base_lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=config.base_lr, weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate_miou(model: nn.Module, dataset, num_classes: int, ignore_index: int, batch_size: int = 8,
                  device: torch.device = torch.device("cpu")) -> float:
    """mIoU (%) at the model input size over a non-augmented dataset, from one confusion matrix."""
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for images, labels in loader:
        pred = model(images.to(device)).argmax(1).cpu()
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
        ignore_index: int, description: str, loss_module: Optional[nn.Module] = None,
        checkpoint_to: Optional[str] = None, resume: bool = False,
        on_best: Optional[Callable[[nn.Module, dict], None]] = None,
        loss_settings: Optional[dict] = None) -> List[dict]:
    """Train ``model`` in place; return one record per epoch (loss parts, lr, val mIoU when measured).

    With ``checkpoint_to``, the full training state is written atomically after every
    epoch to ``<checkpoint_to>.state``, with a CSV log ``<checkpoint_to>.log.csv`` and
    TensorBoard events in ``<checkpoint_to>.tb/``; ``resume`` continues from that state
    exactly. ``on_best(model, record)`` is called whenever validation reaches a new best
    mIoU. With EMA on, the averaged weights are validated and copied into ``model`` at
    the end. ``loss_module`` holds what the loss itself learns (distillation's feature
    connectors): it is optimised with ``model``, and its state is saved in and restored
    from the training state beside the model's, so a resumed run continues it too. Under
    torchrun the work is shared by DDP and only rank 0 writes or draws. ``loss_settings`` (e.g.
    ``{"class_weights": [...]}``) are what the loss is made of but learns nothing of: saved in
    the state with the ignore index and ``config.augment``, and a resume that asks for others
    is refused, since it would silently change the objective half-way.
    """
    from edgeseg.training import distributed
    from edgeseg.training.state import (load_state, require_same_loss, restore_model, restore_rng, resume_settings,
                                        save_state, state_path)

    settings = resume_settings(loss_settings, augment=config.augment, ignore_index=ignore_index)
    if config.threads:
        torch.set_num_threads(config.threads)
    workers = distributed.join(config.device)
    device = distributed.device_for(config.device, workers)
    seed_everything(config.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    if len(train_set) < config.batch_size * workers.world_size:
        raise ConfigError(f"The training split has {len(train_set)} images, fewer than --batch-size "
                          f"{config.batch_size} x {workers.world_size} process(es); lower --batch-size.")
    generator = torch.Generator().manual_seed(config.seed)
    sampler = None
    if workers.distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(
            train_set, num_replicas=workers.world_size, rank=workers.rank, shuffle=True, seed=config.seed,
            drop_last=True)
        np.random.seed((config.seed + workers.rank) % (2 ** 32))  # each process augments its shard differently
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=sampler is None,
                                         sampler=sampler, drop_last=True, generator=generator)
    model.to(device)
    extra_params = []
    if loss_module is not None:
        loss_module.to(device)  # in place: the same parameter objects the loss uses
        extra_params = list(loss_module.parameters())
    params = list(model.parameters()) + extra_params
    optimizer = make_optimizer(params, config)
    ema = _Ema(model, config.ema_decay) if config.ema_decay else None
    total_steps = config.epochs * len(loader)
    warmup_steps = int(config.warmup_epochs * len(loader))
    history: List[dict] = []
    step, first_epoch, best = 0, 1, None
    state_file = state_path(checkpoint_to) if checkpoint_to else None
    amp = _Autocast(config.amp and device.type == "cuda", device)
    if resume:
        if state_file is None or not state_file.exists():
            raise ConfigError(f"--resume found no training state {state_file}; start without --resume.")
        state = load_state(state_file)
        require_same_loss(state, state_file, settings)  # first: other weights may also mean other shapes
        restore_model(state, state_file, model, optimizer, loss=loss_module)
        if ema is not None and state.get("ema") is not None:
            ema.model.load_state_dict(state["ema"])
        if amp.scaler is not None and state.get("scaler"):  # float16 loss scaling continues where it was
            amp.scaler.load_state_dict(state["scaler"])
        restore_rng(state, generator)
        step, first_epoch, history = state["step"], state["epoch"] + 1, list(state["history"])
        best = state.get("best")
        if workers.is_main:
            say(f"Resuming after epoch {state['epoch']} of {config.epochs}")
    trained = model  # the plain module: what is validated, saved and returned
    if workers.distributed:
        if config.sync_bn:
            if device.type != "cuda":
                raise ConfigError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); drop it on CPU.")
            model = trained = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    events = _TensorBoard(checkpoint_to if workers.is_main and config.tensorboard else None)
    bar = progress_bar(description, total_steps) if workers.is_main else contextlib.nullcontext(_no_progress)
    with bar as advance, events:
        advance(step)
        for epoch in range(first_epoch, config.epochs + 1):
            model.train()
            if sampler is not None:
                sampler.set_epoch(epoch)
            sums: Dict[str, float] = {}
            started = time.perf_counter()
            lr = config.base_lr
            for images, labels in loader:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                lr = poly_lr(config.base_lr, step, total_steps, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with amp.context():  # the teacher inside loss_fn runs under the same autocast
                    logits = model(images)
                    loss, parts = loss_fn(logits.float(), images, labels)
                optimizer.zero_grad(set_to_none=True)
                amp.backward(loss)
                distributed.average_gradients(extra_params, workers)  # e.g. feature connectors: outside DDP
                if config.grad_clip:
                    amp.unscale(optimizer)
                    parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
                amp.step(optimizer)
                if ema is not None:
                    ema.update(trained)
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value
                step += 1
                advance(1, status=f"epoch {epoch}/{config.epochs} loss {loss.item():.3f}")
            means = distributed.mean_across({k: v / len(loader) for k, v in sums.items()}, workers, device)
            record = {"epoch": epoch, "lr": lr, "seconds": round(time.perf_counter() - started, 2),
                      **{k: round(v, 5) for k, v in means.items()}}
            if workers.is_main and val_set is not None and (epoch % config.val_every == 0 or epoch == config.epochs):
                evaluated = ema.model if ema is not None else trained
                recalibrate_batchnorm(evaluated, loader, device)
                record["val_miou"] = round(evaluate_miou(evaluated, val_set, num_classes, ignore_index,
                                                         device=device), 3)
                say(f"  epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in record.items() if k != "epoch"))
                if on_best is not None and (best is None or record["val_miou"] > best):
                    best = record["val_miou"]
                    on_best(evaluated, record)
            history.append(record)
            if workers.is_main:
                events.write(record, step)
                if state_file is not None:
                    save_state(state_file, model=trained, optimizer=optimizer, epoch=epoch, step=step,
                               history=history, generator=generator, ema=ema, best=best, loss=loss_module,
                               scaler=amp.scaler, loss_settings=settings)
                    _write_csv(Path(str(checkpoint_to) + ".log.csv"), history)
            distributed.barrier(workers)
    if ema is not None:
        trained.load_state_dict(ema.state_dict())
    if not (history and "val_miou" in history[-1] and ema is None):  # else the last validation just did it
        recalibrate_batchnorm(trained, loader, device)
    if config.sync_bn:
        _plain_batchnorm(trained)
    trained.to("cpu").eval()
    distributed.leave(workers)
    return history


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, device: torch.device, max_batches: int = 50) -> None:
    """"Precise BN": set BatchNorm running statistics to their average over training batches at the final weights.

    Running statistics trail the weights by an exponential average; torchvision's
    MobileNetV3 uses momentum 0.01, so after a short training they describe a network
    hundreds of steps old and eval-mode mIoU collapses (9.6 vs 36 with batch statistics
    after 10 CamVid epochs). Re-estimating them with frozen weights fixes that for
    every architecture, at the cost of one forward pass over at most ``max_batches``.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts equally
    was_training = model.training
    model.train()
    for index, (images, _labels) in enumerate(loader):
        if index >= max_batches:
            break
        model(images.to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


def _plain_batchnorm(module: nn.Module) -> None:
    """Turn SyncBatchNorm layers back into BatchNorm2d (same parameters), so the model runs on CPU again."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _plain_batchnorm(child)


def _no_progress(n: int = 1, status: str = "") -> None:
    """Ranks other than 0 draw nothing."""


class _Autocast:
    """Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling); a no-op elsewhere."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.dtype = torch.float32
        self.scaler = None
        if enabled:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self.dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")

    def context(self):
        return torch.autocast("cuda", dtype=self.dtype) if self.enabled else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


class _TensorBoard:
    """Per-epoch scalars as TensorBoard events in ``<checkpoint>.tb/`` (skipped, with a note, without tensorboard)."""

    def __init__(self, checkpoint_to: Optional[str]):
        self.writer = None
        if checkpoint_to is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say("TensorBoard events are not written: the tensorboard package is not installed.")
            return
        self.writer = SummaryWriter(log_dir=str(checkpoint_to) + ".tb")

    def write(self, record: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{'val' if key.startswith('val_') else 'train'}/{key}", value,
                                       record["epoch"])
        self.writer.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.writer is not None:
            self.writer.close()


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
