"""The training state written after every epoch, so a killed run resumes exactly where it was.

It holds the model, the optimizer (and EMA weights), whatever the loss learns outside the
model (distillation's feature connectors), the float16 loss scaler, the epoch and step
counters, the history so far and every random-number state that shapes the rest of the
run (torch, numpy, Python, and the data loader's shuffling generator). Everything is
stored as tensors and primitives so it loads with ``weights_only=True``.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgeseg.errors import ConfigError, InputFileError, option
from edgeseg.fileio import atomic_path


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state")


def _numpy_state() -> dict:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _restore_numpy(state: dict) -> None:
    np.random.set_state((state["kind"], state["keys"].numpy().astype(np.uint32), state["position"],
                         state["has_gauss"], state["cached"]))


def save_state(path: Path, *, model, optimizer, epoch: int, step: int, history: list, generator: torch.Generator,
               ema=None, best: Optional[float] = None, loss=None, scaler=None,
               loss_settings: Optional[dict] = None) -> None:
    """Write the state atomically; ``loss`` is the module of the loss's learnt parts (None: nothing learnt)."""
    python_state = random.getstate()
    payload = {
        "epoch": epoch, "step": step, "history": history, "best": best,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "optimizer_type": type(optimizer).__name__,
        "ema": ema.state_dict() if ema is not None else None,
        "loss": loss.state_dict() if loss is not None else {},  # {} = the loss learns nothing; absent = older edgeseg
        "scaler": scaler.state_dict() if scaler is not None else None,
        "loss_settings": dict(loss_settings or {}),  # absent = older edgeseg: not checked on resume
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "loader": generator.get_state(),
                "python": [python_state[0], list(python_state[1]), python_state[2]]},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputFileError(f"The training state {path} is unreadable ({type(exc).__name__}); delete it to start "
                             f"over, or run without --resume.") from exc


def restore_model(state: dict, path: Path, model, optimizer, loss=None) -> None:
    """Load the saved weights, the loss's learnt parts and the optimizer, or say in one sentence why this state
    is not this run's.

    ``loss`` (the module of what the loss learns, e.g. feature connectors) is loaded before the
    optimizer, whose parameter groups hold the model's parameters and then the loss's.
    """
    wanted_loss = _prefixed(loss.state_dict() if loss is not None else {})
    saved_loss = state.get("loss")
    if saved_loss is None and wanted_loss:
        raise ConfigError(f"The training state {path} holds no {next(iter(wanted_loss))}: an older edgeseg wrote it "
                          f"without what this --loss learns (its feature connectors), which a resume would restart "
                          f"from scratch, so start afresh without --resume.")
    saved_loss = _prefixed(saved_loss or {})
    difference = (_first_difference(state["model"], model.state_dict())
                  or _first_difference(saved_loss, wanted_loss, owner="this run's loss")
                  or _optimizer_difference(state, optimizer))
    if difference is None:
        model.load_state_dict(state["model"])
        if loss is not None:
            loss.load_state_dict({name[len(_LOSS):]: value for name, value in saved_loss.items()})
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError):  # parameter groups that do not line up, or another optimizer's fields
            difference = "its optimizer state does not fit this run's optimizer"
    if difference is not None:
        raise ConfigError(f"The training state {path} was written by a run that built another model or optimizer: "
                          f"{difference}. Resume with the options of the run that wrote it (train/distill: "
                          f"--arch/--student, --arch-arg/--student-arg, --optimizer, --loss, --feature-pair; "
                          f"prune: its pruning options), or delete {path.name} to start over.")


def resume_settings(loss_settings: Optional[dict], *, augment: str, ignore_index: int) -> dict:
    """What a run's objective is made of but its state learns nothing of: the loss's own settings (class weights,
    distillation's temperature and weights), the label value it ignores and its training images' augmentation.
    Saved in the state; a resume that asks for others is refused (require_same_loss)."""
    return _plain({**(loss_settings or {}), "ignore_index": ignore_index, "augment": augment})


def _plain(value):
    """Python's own numbers, lists and dicts: the state is read back with weights_only=True, which refuses numpy
    scalars (a temperature given as np.float32 from Python would make the state unreadable)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


# what a changed setting would change half-way, where not the loss
_CHANGES = {"augment": "the training images"}
# where a setting is set (on the command line, from Python), where not --its-name / its_name=
_SET_BY = {"ignore_index": ("--ignore-index, or the data's dataset.yaml", "ignore_index=, or the data's dataset.yaml"),
           "loss_weight": ("--loss, --loss-weight, --kd-weight", "loss=, loss_weights=, kd_weight="),
           "feature_pairs": ("--feature-pair", "feature_pairs="), "augment": ("--augment", "TrainConfig(augment=...)")}


def require_same_loss(state: dict, path: Path, settings: Optional[dict]) -> None:
    """Refuse, in one sentence, to resume a state whose objective was made with other settings (resume_settings).
    Settings a state does not record (written before edgeseg recorded them) are not checked."""
    saved = state.get("loss_settings")
    if saved is None:  # written before edgeseg recorded them
        return
    wanted = dict(settings or {})
    for name in saved:  # in the order the run recorded them: the loss's terms before their details
        if saved[name] != wanted.get(name):
            words = name.replace("_", " ")
            raise ConfigError(f"The training state {path} was trained with {words} {_shown(saved[name])}, this "
                              f"run asks for {_shown(wanted.get(name))}; resuming would change "
                              f"{_CHANGES.get(name, 'the loss')} half-way. Resume with the run's own options "
                              f"({option(*_SET_BY.get(name, ('--' + name.replace('_', '-'), name + '=')))}), or delete {path.name} to start over.")


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items())
    return f"{value:.6g}" if isinstance(value, float) else str(value)


_LOSS = "loss."  # the loss's tensors are named apart from the model's in messages: loss.connectors.0.project.weight


def _prefixed(loss_state: dict) -> dict:
    return {_LOSS + name: value for name, value in loss_state.items()}


def _optimizer_difference(state: dict, optimizer) -> Optional[str]:
    """Another optimizer type, or saved moments whose shapes are not this run's parameters (e.g. a --loss
    with learnt adapters of other sizes), in words; None when the optimizer state fits."""
    saved_type = state.get("optimizer_type")  # absent in states written before it was recorded
    if saved_type is not None and saved_type != type(optimizer).__name__:
        return f"it was trained with {saved_type}, this run asks for {type(optimizer).__name__}"
    params = [param for group in optimizer.param_groups for param in group["params"]]
    for index, moments in state["optimizer"].get("state", {}).items():
        if not isinstance(index, int) or index >= len(params):
            return "its optimizer holds more parameters than this run has (another --loss?)"
        for name, value in moments.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                return (f"its optimizer's {name} for parameter {index} is {tuple(value.shape)}, this run's parameter "
                        f"is {tuple(params[index].shape)} (another --loss?)")
    return None


def _first_difference(saved: dict, wanted: dict, owner: str = "this model") -> Optional[str]:
    """The first tensor the saved state and this model (or loss) disagree on, in words; None when they match."""
    for name, tensor in wanted.items():
        if name not in saved:
            return f"it has no {name}"
        if tuple(saved[name].shape) != tuple(tensor.shape):
            return f"its {name} is {tuple(saved[name].shape)}, {owner}'s is {tuple(tensor.shape)}"
    extra = [name for name in saved if name not in wanted]
    return f"it has {extra[0]}, which {owner} lacks" if extra else None


def restore_rng(state: dict, generator: torch.Generator) -> None:
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    _restore_numpy(rng["numpy"])
    generator.set_state(rng["loader"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
