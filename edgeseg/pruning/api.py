"""``edgeseg prune``: structural channel pruning with Torch-Pruning's dependency graph.

Removing a channel from one layer forces the same removal in every coupled layer
(the next conv's input, the BatchNorm, a residual add, a concat, a squeeze-excite
gate). Torch-Pruning's DependencyGraph finds those groups, so the pruned network is a
genuinely smaller dense network, not a masked one, and gets faster on any runtime.
This is the only package that imports torch_pruning.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from edgeseg.arch.profile import count_macs, count_params
from edgeseg.checkpoint import layer_structure, load_model, save_checkpoint
from edgeseg.console import say
from edgeseg.errors import ConfigError, InputFileError
from edgeseg.fileio import check_output_path
from edgeseg.sidecar import write_sidecar

IMPORTANCES = ("magnitude", "bn-scale", "random")


def class_layers(model: nn.Module, num_classes: int) -> List[nn.Module]:
    """Layers whose output is the class dimension: pruning them would change what the model predicts."""
    found = [m for m in model.modules()
             if (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
             or (isinstance(m, nn.Linear) and m.out_features == num_classes)]
    if not found:
        raise ConfigError(f"No layer outputs {num_classes} channels, so the classifier cannot be protected; "
                          f"check that the model's num_classes is right.")
    return found


def _importance(name: str):
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "bn-scale":  # network slimming (Liu et al. 2017): a channel matters as much as its BN scale
        return tp.importance.BNScaleImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise ConfigError(f"Unknown importance '{name}'; choose one of: {', '.join(IMPORTANCES)}.")


def prune_model(model: nn.Module, num_classes: int, height: int, width: int, *, ratio: float,
                importance: str = "magnitude", global_pruning: bool = False, round_to: Optional[int] = None,
                seed: int = 0) -> nn.Module:
    """Remove ``ratio`` of the prunable channels of ``model`` in place and return it."""
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}.")
    torch.manual_seed(seed)
    model.eval()
    example = torch.zeros(1, 3, height, width)
    pruner = tp.pruner.MetaPruner(model, example, importance=_importance(importance), pruning_ratio=ratio,
                                  global_pruning=global_pruning, ignored_layers=class_layers(model, num_classes),
                                  round_to=round_to)
    pruner.step()
    return model


def prune_to_target(model: nn.Module, num_classes: int, height: int, width: int, *, target_macs: Optional[int] = None,
                    target_params: Optional[int] = None, importance: str = "magnitude", global_pruning: bool = False,
                    round_to: Optional[int] = None, max_ratio: float = 0.9, steps: int = 30, seed: int = 0) -> int:
    """Prune in small steps until MACs and params are at or below their targets; return the steps taken.

    Each step removes a further 1/steps of ``max_ratio`` (Torch-Pruning's iterative
    schedule), so the result lands just under the target instead of far below it.
    """
    import torch_pruning as tp

    if target_macs is None and target_params is None:
        raise ConfigError("Give --target-macs or --target-params (or use --ratio).")
    torch.manual_seed(seed)
    model.eval()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 3, height, width), importance=_importance(importance),
                                  pruning_ratio=max_ratio, iterative_steps=steps, global_pruning=global_pruning,
                                  ignored_layers=class_layers(model, num_classes), round_to=round_to)

    def reached() -> bool:
        return ((target_macs is None or count_macs(model, height, width) <= target_macs)
                and (target_params is None or count_params(model) <= target_params))

    for step in range(1, steps + 1):
        pruner.step()
        if reached():
            return step
    raise ConfigError(f"Even removing {max_ratio:.0%} of the channels does not reach the target "
                      f"(MACs {count_macs(model, height, width):,}, params {count_params(model):,}); raise the target.")


def _channel_changes(before: Dict[str, dict], after: Dict[str, dict]) -> Dict[str, list]:
    """{layer: [channels before, channels after]} for the layers whose output width changed."""
    changes = {}
    for name, attrs in before.items():
        key = "out_channels" if "out_channels" in attrs else "out_features" if "out_features" in attrs else None
        if key and after.get(name, {}).get(key) != attrs[key]:
            changes[name] = [attrs[key], after[name][key]]
    return changes


def prune(model: str, out: str, *, ratio: float = 0.4, target_macs: Optional[float] = None,
          target_params: Optional[float] = None, importance: str = "magnitude", global_pruning: bool = False,
          round_to: Optional[int] = None, finetune_epochs: int = 0, data: Optional[str] = None,
          teacher: Optional[str] = None, batch_size: int = 8, lr: Optional[float] = None, seed: int = 0,
          trust_checkpoint: bool = False, threads: Optional[int] = None) -> dict:
    """Prune ``ratio`` of the channels of ``model``; optionally fine-tune with distillation; write ``out``.

    Fine-tuning distils from the unpruned model (or ``teacher``) on ``data``.

    >>> edgeseg.prune("student.pt", "pruned.pt", ratio=0.4)  # doctest: +SKIP
    """
    check_output_path(out)
    if finetune_epochs and not data:
        raise ConfigError("--finetune-epochs needs --data to fine-tune on.")
    loaded = load_model(model, trust_checkpoint=trust_checkpoint)
    if not loaded.rebuildable:
        raise InputFileError(f"{model} is a {loaded.arch} module that edgeseg cannot rebuild after pruning; "
                             f"prune an edgeseg checkpoint or a state_dict with --arch instead.")
    spec = loaded.input_spec
    if spec is None:
        raise InputFileError(f"{model} does not record its input size; re-save it with edgeseg train or distill.")
    net = loaded.model
    before = layer_structure(net)
    params_before, macs_before = count_params(net), count_macs(net, spec.height, spec.width)
    reference = None
    if finetune_epochs and teacher is None:
        reference = load_model(model, trust_checkpoint=trust_checkpoint).model  # the unpruned model teaches
    if target_macs is not None or target_params is not None:
        steps = prune_to_target(net, loaded.num_classes, spec.height, spec.width,
                                target_macs=int(target_macs) if target_macs is not None else None,
                                target_params=int(target_params) if target_params is not None else None,
                                importance=importance, global_pruning=global_pruning, round_to=round_to, seed=seed)
        say(f"Target reached after {steps} pruning step(s)")
    else:
        prune_model(net, loaded.num_classes, spec.height, spec.width, ratio=ratio, importance=importance,
                    global_pruning=global_pruning, round_to=round_to, seed=seed)
    params_after, macs_after = count_params(net), count_macs(net, spec.height, spec.width)
    say(f"Pruned {loaded.arch}: params {params_before / 1e6:.2f}M -> {params_after / 1e6:.2f}M, "
        f"MACs {macs_before / 1e9:.3f}G -> {macs_after / 1e9:.3f}G")
    history = []
    if finetune_epochs:
        history = _finetune(net, reference, teacher, data, spec, loaded.num_classes, finetune_epochs, batch_size, lr,
                            seed, trust_checkpoint, threads)
    after = layer_structure(net)
    settings = {"ratio": ratio if target_macs is None and target_params is None else None,
                "target_macs": target_macs, "target_params": target_params, "importance": importance, "global": global_pruning, "round_to": round_to,
                "finetune_epochs": finetune_epochs, "seed": seed}
    meta = dict(loaded.meta, stage="prune", prune=settings, finetune_history=history)
    save_checkpoint(out, net, arch=loaded.arch, num_classes=loaded.num_classes, input_spec=spec,
                    dataset=loaded.dataset, arch_args=loaded.arch_args, pruned=True, meta=meta)
    sidecar = write_sidecar(
        out, "checkpoint", input_spec=spec, dataset=loaded.dataset, parent=model, stage="prune",
        model={"arch": loaded.arch, "num_classes": loaded.num_classes, "params": params_after, "macs": macs_after},
        prune=dict(settings, params_before=params_before, macs_before=macs_before,
                   channels=_channel_changes(before, after),
                   val_miou=history[-1].get("val_miou") if history else None))
    say(f"Wrote {out}")
    return sidecar


def _finetune(net, reference, teacher, data, spec, num_classes, epochs, batch_size, lr, seed, trust, threads):
    from edgeseg.data.torch_dataset import AugmentConfig, SegmentationDataset
    from edgeseg.distillation.api import kd_loss
    from edgeseg.training.data import check_classes, training_splits
    from edgeseg.training.loop import TrainConfig, fit

    if reference is None:
        reference = load_model(teacher, trust_checkpoint=trust).model
    reference.eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    train_split, val_split = training_splits(data)
    info = train_split.info
    check_classes(num_classes, info, "The pruned model")
    # fine-tuning starts from trained weights: half the from-scratch AdamW learning rate
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr if lr is not None else 5e-4, seed=seed,
                         val_every=max(1, epochs), threads=threads)
    train_set = SegmentationDataset(train_split, spec, AugmentConfig())
    val_set = SegmentationDataset(val_split, spec) if val_split is not None else None
    return fit(net, train_set, val_set, kd_loss(reference, info.ignore_index, 4.0, 1.0), config,
               num_classes=num_classes, ignore_index=info.ignore_index, description="fine-tune pruned")
