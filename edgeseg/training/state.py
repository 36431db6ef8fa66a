"""The training state written after every epoch, so a killed run resumes exactly where it was.

It holds the model, the optimizer (and EMA weights), the epoch and step counters, the
history so far and every random-number state that shapes the rest of the run (torch,
numpy, Python, and the data loader's shuffling generator). Everything is stored as
tensors and primitives so it loads with ``weights_only=True``.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgeseg.errors import ConfigError, InputFileError
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
               ema=None, best: Optional[float] = None) -> None:
    python_state = random.getstate()
    payload = {
        "epoch": epoch, "step": step, "history": history, "best": best,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
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


def restore_model(state: dict, path: Path, model, optimizer) -> None:
    """Load the saved weights and optimizer, or say in one sentence why this state is not this run's."""
    saved, wanted = state["model"], model.state_dict()
    difference = _first_difference(saved, wanted)
    if difference is None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # another optimizer, or a loss with its own parameters added or dropped
            difference = "its optimizer holds other parameters (another --optimizer or --loss)"
    if difference is not None:
        raise ConfigError(f"The training state {path} was written by a run that built another model: {difference}. "
                          f"Resume with the same --arch/--student, --arch-arg/--student-arg and --loss as that run, "
                          f"or delete {path.name} to start over.")
    model.load_state_dict(saved)


def _first_difference(saved: dict, wanted: dict) -> Optional[str]:
    """The first tensor the saved state and this model disagree on, in words; None when they match."""
    for name, tensor in wanted.items():
        if name not in saved:
            return f"it has no {name}"
        if tuple(saved[name].shape) != tuple(tensor.shape):
            return f"its {name} is {tuple(saved[name].shape)}, this model's is {tuple(tensor.shape)}"
    extra = [name for name in saved if name not in wanted]
    return f"it has {extra[0]}, which this model lacks" if extra else None


def restore_rng(state: dict, generator: torch.Generator) -> None:
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    _restore_numpy(rng["numpy"])
    generator.set_state(rng["loader"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
