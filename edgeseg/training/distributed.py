"""Running one training job over several processes with PyTorch's own DDP, started by ``torchrun``.

``torchrun --nproc_per_node N -m edgeseg.cli train|distill ...`` sets WORLD_SIZE, RANK
and LOCAL_RANK; edgeseg then joins the process group (NCCL on CUDA, gloo on CPU), gives
each process its own shard of every epoch (DistributedSampler), wraps the model in
DistributedDataParallel so gradients are averaged, and lets only rank 0 write files
and draw progress. ``--batch-size`` stays per process, as with torchrun elsewhere.
Without those variables everything runs in one process as before.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Workers:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Workers:
    """The job this process belongs to (from torchrun's environment; a single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Workers()
    return Workers(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def join(device: str) -> Workers:
    """Join torchrun's process group once; returns this process's place in it."""
    workers = current()
    if workers.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(workers.local_rank)
        torch.distributed.init_process_group(backend=backend)
    return workers


def device_for(device: str, workers: Workers) -> torch.device:
    """One GPU per process under torchrun ('cuda' -> cuda:LOCAL_RANK); CPU stays CPU."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            from edgeseg.errors import ConfigError

            raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu.")
        return torch.device(f"cuda:{workers.local_rank}" if workers.distributed and device == "cuda" else device)
    return torch.device("cpu")


def mean_across(values: dict, workers: Workers, device: torch.device) -> dict:
    """Average per-process numbers (epoch losses) over all processes."""
    if not workers.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return {k: float(v) / workers.world_size for k, v in zip(keys, tensor.tolist())}


def average_gradients(params, workers: Workers) -> None:
    """All-reduce the gradients of parameters DDP does not own (trained next to the model)."""
    if not workers.distributed:
        return
    for param in params:
        if param.grad is not None:
            torch.distributed.all_reduce(param.grad)
            param.grad.div_(workers.world_size)


def barrier(workers: Workers) -> None:
    if workers.distributed:
        torch.distributed.barrier()


def leave(workers: Workers) -> None:
    """Leave the process group at the end of a verb, so the next one (or the interpreter) starts clean."""
    if workers.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
