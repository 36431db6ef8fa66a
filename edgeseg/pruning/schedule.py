"""How much to prune: one shot to a channel ratio, or small steps until a target is met.

Torch-Pruning's dependency graph makes each step remove whole coupled groups, so the
network after every step is a smaller dense network that runs (and can be timed).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import nn

from edgeseg.arch.profile import count_macs, count_params
from edgeseg.console import say
from edgeseg.errors import ConfigError
from edgeseg.pruning.importance import NEEDS_GRADIENTS, class_layers, make_importance

# Fills every parameter's .grad before a pruning step (Taylor importance reads them).
GradientSource = Callable[[nn.Module], object]


def _pruner(model: nn.Module, num_classes: int, height: int, width: int, *, importance: str, ratio: float,
            steps: int, global_pruning: bool, round_to: Optional[int], gradients: Optional[GradientSource]):
    import torch_pruning as tp

    if importance in NEEDS_GRADIENTS and gradients is None:
        raise ConfigError(f"--importance {importance} needs gradients; pass --data with training images.")
    model.eval()
    # besides the classifier, an architecture may name layers whose width its structure fixes (attention heads)
    fixed = list(getattr(model, "unprunable_layers", list)())
    # a wrapper that returns only the main logits would hide its auxiliary heads from the dependency graph,
    # leaving them expecting channels the pruned body no longer produces
    forward_fn = (lambda net, x: net.all_outputs(x)) if hasattr(model, "all_outputs") else None
    return tp.pruner.MetaPruner(model, torch.zeros(1, 3, height, width), forward_fn=forward_fn,
                                importance=make_importance(importance),
                                pruning_ratio=ratio, iterative_steps=steps, global_pruning=global_pruning,
                                ignored_layers=class_layers(model, num_classes) + fixed, round_to=round_to)


def _step(pruner, model: nn.Module, gradients: Optional[GradientSource]) -> None:
    if gradients is not None:
        gradients(model)
    pruner.step()
    model.zero_grad(set_to_none=True)  # the gradients served the ranking only; do not save them


def prune_model(model: nn.Module, num_classes: int, height: int, width: int, *, ratio: float,
                importance: str = "magnitude", global_pruning: bool = False, round_to: Optional[int] = None,
                seed: int = 0, gradients: Optional[GradientSource] = None) -> nn.Module:
    """Remove ``ratio`` of the prunable channels of ``model`` in place and return it."""
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}.")
    torch.manual_seed(seed)
    pruner = _pruner(model, num_classes, height, width, importance=importance, ratio=ratio, steps=1,
                     global_pruning=global_pruning, round_to=round_to, gradients=gradients)
    _step(pruner, model, gradients)
    return model


def prune_until(model: nn.Module, num_classes: int, height: int, width: int, reached: Callable[[nn.Module], bool],
                *, importance: str = "magnitude", global_pruning: bool = False, round_to: Optional[int] = None,
                max_ratio: float = 0.9, steps: int = 30, seed: int = 0,
                gradients: Optional[GradientSource] = None) -> int:
    """Prune in small steps until ``reached(model)``; return the number of steps taken.

    Each step removes a further 1/steps of ``max_ratio`` (Torch-Pruning's iterative
    schedule), so the result lands just past the target instead of far beyond it.
    Raises when even ``max_ratio`` does not reach it.
    """
    torch.manual_seed(seed)
    pruner = _pruner(model, num_classes, height, width, importance=importance, ratio=max_ratio, steps=steps,
                     global_pruning=global_pruning, round_to=round_to, gradients=gradients)
    for step in range(1, steps + 1):
        _step(pruner, model, gradients)
        if reached(model):
            return step
    raise ConfigError(f"Even removing {max_ratio:.0%} of the channels does not reach the target "
                      f"(MACs {count_macs(model, height, width):,}, params {count_params(model):,}); "
                      f"raise the target.")


def prune_to_target(model: nn.Module, num_classes: int, height: int, width: int, *,
                    target_macs: Optional[int] = None, target_params: Optional[int] = None,
                    latency_ms: Optional[Callable[[nn.Module], float]] = None,
                    target_latency_ms: Optional[float] = None, trace: Optional[List[dict]] = None,
                    **schedule) -> int:
    """Prune in steps until every given target (MACs, parameters, measured latency) is met.

    ``latency_ms(model)`` measures the model on the deployment backend; each step's
    MACs, parameters and latency are appended to ``trace``.
    """
    if target_macs is None and target_params is None and target_latency_ms is None:
        raise ConfigError("Give --target-macs, --target-params or --target-latency-ms (or use --ratio).")
    if target_latency_ms is not None and latency_ms is None:
        raise ConfigError("A latency target needs a backend to measure on.")
    trace = trace if trace is not None else []

    def reached(net: nn.Module) -> bool:
        macs, params = count_macs(net, height, width), count_params(net)
        record = {"step": len(trace) + 1, "macs": macs, "params": params}
        if target_latency_ms is not None:
            measured = latency_ms(net)
            if measured <= target_latency_ms:  # confirm: one lucky quiet moment must not end the search
                measured = max(measured, latency_ms(net))
            record["latency_ms"] = round(measured, 4)
            say(f"  step {record['step']}: MACs {macs / 1e9:.3f}G, latency {record['latency_ms']:.2f} ms "
                f"(target {target_latency_ms} ms)")
        trace.append(record)
        return ((target_macs is None or macs <= target_macs) and (target_params is None or params <= target_params)
                and (target_latency_ms is None or record["latency_ms"] <= target_latency_ms))

    return prune_until(model, num_classes, height, width, reached, **schedule)
