"""``edgeseg prune``: structural channel pruning with Torch-Pruning's dependency graph.

Removing a channel from one layer forces the same removal in every coupled layer
(the next conv's input, the BatchNorm, a residual add, a concat, a squeeze-excite
gate). Torch-Pruning's DependencyGraph finds those groups, so the pruned network is a
genuinely smaller dense network, not a masked one, and gets faster on any runtime.
This is the only package that imports torch_pruning.
"""
from __future__ import annotations

from typing import Dict, Optional

from edgeseg.arch.profile import count_macs, count_params
from edgeseg.checkpoint import layer_structure, load_model, save_checkpoint
from edgeseg.console import say
from edgeseg.errors import ConfigError, InputFileError
from edgeseg.fileio import check_output_path
from edgeseg.pruning.importance import IMPORTANCES, NEEDS_GRADIENTS
from edgeseg.pruning.schedule import prune_model, prune_to_target
from edgeseg.sidecar import write_sidecar
from edgeseg.spec import ModelFacts
from edgeseg.training import class_weights as weighting
from edgeseg.training.loop import TrainConfig


def _channel_changes(before: Dict[str, dict], after: Dict[str, dict]) -> Dict[str, list]:
    """{layer: [channels before, channels after]} for the layers whose output width changed."""
    changes = {}
    for name, attrs in before.items():
        key = "out_channels" if "out_channels" in attrs else "out_features" if "out_features" in attrs else None
        if key and after.get(name, {}).get(key) != attrs[key]:
            changes[name] = [attrs[key], after[name][key]]
    return changes


def _check_options(importance: str, data: Optional[str], finetune_epochs: int, sparsity_epochs: int) -> None:
    if importance not in IMPORTANCES:
        raise ConfigError(f"Unknown importance '{importance}'; choose one of: {', '.join(IMPORTANCES)}.")
    for needs_data, what in ((finetune_epochs, "--finetune-epochs"), (sparsity_epochs, "--sparsity-epochs"),
                             (importance in NEEDS_GRADIENTS, f"--importance {importance}")):
        if needs_data and not data:
            raise ConfigError(f"{what} needs --data with training images.")
    if sparsity_epochs and importance != "bn-scale":
        raise ConfigError("--sparsity-epochs trains BatchNorm scales towards zero for --importance bn-scale "
                          "(network slimming); add --importance bn-scale or drop --sparsity-epochs.")


def _check_resume(out: str, finetune_epochs: int, target_latency_ms: Optional[float]) -> None:
    """--resume continues the fine-tuning a killed run left in OUT.state; say so before any pruning work."""
    from edgeseg.training.state import state_path

    if not finetune_epochs:
        raise ConfigError("--resume continues an interrupted fine-tuning; add the run's --finetune-epochs and --data.")
    if target_latency_ms is not None:
        # the steps a latency target takes depend on timings, so pruning again may keep other channels
        raise ConfigError("--resume cannot be used with --target-latency-ms (pruning again may stop at another "
                          "step); prune to the --ratio or --target-macs that run reached, or start over.")
    if not state_path(out).is_file():
        raise ConfigError(f"--resume found no fine-tuning state {state_path(out)}; start without --resume.")


def prune(model: str, out: str, *, ratio: float = 0.4, target_macs: Optional[float] = None,
          target_params: Optional[float] = None, target_latency_ms: Optional[float] = None,
          backend: str = "onnxruntime", device: str = "cpu", importance: str = "magnitude",
          global_pruning: bool = False, round_to: Optional[int] = None, sparsity_epochs: int = 0,
          sparsity: float = 1e-4, taylor_images: int = 64, finetune_epochs: int = 0, data: Optional[str] = None,
          teacher: Optional[str] = None, batch_size: int = 8, lr: Optional[float] = None, seed: int = 0,
          trust_checkpoint: bool = False, threads: Optional[int] = None, facts: Optional[ModelFacts] = None,
          resume: bool = False, ignore_index: int = 255, class_weights: Optional[str] = None,
          finetune: Optional[TrainConfig] = None) -> dict:
    """Prune the channels of ``model`` (to ``ratio`` or until the targets are met); optionally fine-tune; write ``out``.

    With ``target_latency_ms`` the model is pruned step by step and, after each step,
    exported and timed on ``backend``/``device`` the way ``bench`` times it, until the
    measured median latency is at or under the target. Fine-tuning distils from the
    unpruned model (or ``teacher``) on ``data``. ``facts`` says what a checkpoint made
    elsewhere does not (its architecture, input size, ...); the pruned checkpoint records it.
    Fine-tuning writes ``<out>.state`` and ``<out>.log.csv`` after every epoch; ``resume``
    prunes again (the same options on the same machine keep the same channels; a latency
    target is refused, its steps depend on timings) and continues from that state.
    ``data``'s class count is the model's where no dataset.yaml says it (one that says
    another is refused); ``ignore_index`` is its unlabelled value where none says it.
    ``class_weights`` weighs fine-tuning's cross-entropy per class (as ``train``'s does); by
    default the mode the checkpoint was trained with, counted again on ``data``.
    ``finetune`` gives the fine-tuning's options whole, as one TrainConfig (its epochs,
    batch size, learning rate, ...: what train and qat take), instead of ``finetune_epochs``
    and, for the fine-tuning, ``batch_size``, ``lr``, ``seed`` and ``threads`` (which still
    serve the slimming phase and Taylor's gradients).

    >>> edgeseg.prune("student.pt", "pruned.pt", ratio=0.4)  # doctest: +SKIP
    >>> edgeseg.prune("student.pt", "fast.pt", target_latency_ms=8.0)  # doctest: +SKIP
    """
    check_output_path(out)
    weighting.check(class_weights)
    if finetune is not None:
        if finetune_epochs:
            raise ConfigError("Give the fine-tuning's epochs once: finetune=TrainConfig(epochs=...) or "
                              "finetune_epochs, not both.")
        finetune_epochs = finetune.epochs
    _check_options(importance, data, finetune_epochs, sparsity_epochs)
    if resume:
        _check_resume(out, finetune_epochs, target_latency_ms)
    loaded = load_model(model, trust_checkpoint=trust_checkpoint, facts=facts)
    if not loaded.rebuildable:
        raise InputFileError(f"{model} is a {loaded.arch} module that edgeseg cannot rebuild after pruning; "
                             f"prune an edgeseg checkpoint or a state_dict with --arch instead.")
    if loaded.arch.startswith("hf:"):
        from edgeseg.arch.huggingface import check_prunable

        check_prunable(loaded.arch)
    spec = loaded.input_spec
    if spec is None:
        raise InputFileError(f"{model} does not record its input size; give it with --input-size HEIGHTxWIDTH.")
    net, num_classes = loaded.model, loaded.num_classes
    probe = None
    if target_latency_ms is not None:
        from edgeseg.pruning.latency import LatencyProbe

        probe = LatencyProbe(spec, backend, device, threads)  # an unusable backend fails before any work
    prune_data = None
    if data and (finetune_epochs or sparsity_epochs or importance in NEEDS_GRADIENTS):
        from pathlib import Path

        from edgeseg.data.dataset import ClassCount
        from edgeseg.pruning.training import load_prune_data

        said_by = f"{Path(model).name}'s " + ("weights" if loaded.foreign else "checkpoint")
        prune_data = load_prune_data(data, spec, ClassCount(num_classes, said_by), ignore_index,
                                     finetune.augment if finetune is not None else "standard")
    # the loss that ranks channels (taylor) and recovers accuracy is the one the model was trained with
    if class_weights is not None and not prune_data:
        raise ConfigError("--class-weights weighs the loss of taylor's gradients, the sparsity phase and the "
                          "fine-tuning; add --data with one of them (e.g. --finetune-epochs N), or drop it.")
    weights_used = _class_weights_for(class_weights, loaded.meta, prune_data, num_classes) if prune_data else \
        loaded.meta.get("class_weights")
    if resume:  # the fine-tuning's loss must be the killed run's: say so before any pruning work
        from edgeseg.training.state import load_state, require_same_loss, resume_settings, state_path

        require_same_loss(load_state(state_path(out)), state_path(out), resume_settings(
            {"class_weights": weights_used["weights"] if weights_used else None},
            augment=finetune.augment if finetune is not None else "standard",
            ignore_index=prune_data.info.ignore_index))
    before = layer_structure(net)
    params_before, macs_before = count_params(net), count_macs(net, spec.height, spec.width)
    training = {"sparsity": _slim(net, prune_data, num_classes, sparsity_epochs, sparsity, batch_size, lr, seed,
                                  threads, weights_used["weights"]) if sparsity_epochs else []}
    gradients = None
    if importance in NEEDS_GRADIENTS:
        from edgeseg.pruning.training import TaylorGradients

        gradients = TaylorGradients(prune_data, taylor_images, batch_size, seed, weights_used["weights"])
    schedule = dict(importance=importance, global_pruning=global_pruning, round_to=round_to, seed=seed,
                    gradients=gradients)
    latency = None
    if target_macs is not None or target_params is not None or target_latency_ms is not None:
        trace = []
        if probe is not None:
            latency = {"backend": backend, "device": device, "target_ms": target_latency_ms,
                       "before_ms": round(probe(net), 4), "steps": trace}
            say(f"Measured latency on {backend} ({device}) before pruning: {latency['before_ms']:.2f} ms")
        steps = prune_to_target(net, num_classes, spec.height, spec.width,
                                target_macs=int(target_macs) if target_macs is not None else None,
                                target_params=int(target_params) if target_params is not None else None,
                                latency_ms=probe, target_latency_ms=target_latency_ms, trace=trace, **schedule)
        say(f"Target reached after {steps} pruning step(s)")
        if latency is not None:
            latency["after_ms"] = trace[-1]["latency_ms"]
            latency["speedup"] = round(latency["before_ms"] / latency["after_ms"], 3)
    else:
        prune_model(net, num_classes, spec.height, spec.width, ratio=ratio, **schedule)
    params_after, macs_after = count_params(net), count_macs(net, spec.height, spec.width)
    say(f"Pruned {loaded.arch}: params {params_before / 1e6:.2f}M -> {params_after / 1e6:.2f}M, "
        f"MACs {macs_before / 1e9:.3f}G -> {macs_after / 1e9:.3f}G")
    if finetune_epochs:
        from edgeseg.pruning.training import distillation_finetune, finetune_config

        # the unpruned model as it came from disk (before any slimming phase) teaches by default
        reference = load_model(teacher or model, trust_checkpoint=trust_checkpoint, facts=facts).model
        config = finetune or finetune_config(finetune_epochs, batch_size, lr, seed, threads)
        training["finetune"] = distillation_finetune(net, reference, prune_data, num_classes, config,
                                                     checkpoint_to=out, resume=resume,
                                                     class_weights=weights_used["weights"])
    history = training.get("finetune", [])
    after = layer_structure(net)
    targeted = target_macs is not None or target_params is not None or target_latency_ms is not None
    settings = {"ratio": None if targeted else ratio, "target_macs": target_macs, "target_params": target_params,
                "target_latency_ms": target_latency_ms, "importance": importance, "global": global_pruning,
                "round_to": round_to, "sparsity_epochs": sparsity_epochs,
                "sparsity": sparsity if sparsity_epochs else None, "finetune_epochs": finetune_epochs, "seed": seed,
                "class_weights": weights_used if prune_data else None}
    meta = dict(loaded.meta, stage="prune", prune=settings, finetune_history=history, class_weights=weights_used,
                sparsity_history=training["sparsity"])
    save_checkpoint(out, net, arch=loaded.arch, num_classes=num_classes, input_spec=spec,
                    dataset=loaded.dataset, arch_args=loaded.arch_args, pruned=True, meta=meta)
    sidecar = write_sidecar(
        out, "checkpoint", input_spec=spec, dataset=loaded.dataset, parent=model, stage="prune",
        model={"arch": loaded.arch, "num_classes": num_classes, "params": params_after, "macs": macs_after},
        prune=dict(settings, params_before=params_before, macs_before=macs_before,
                   channels=_channel_changes(before, after), latency=latency,
                   val_miou=history[-1].get("val_miou") if history else None),
        source=loaded.meta.get("source"))
    if finetune_epochs:
        from edgeseg.training.state import state_path

        state_path(out).unlink(missing_ok=True)  # finished, as train does: the checkpoint replaces the state
    say(f"Wrote {out}")
    return sidecar


def _class_weights_for(asked: Optional[str], parent_meta: dict, prune_data, num_classes: int) -> dict:
    """The class weighting of taylor's gradients and the fine-tuning: the one asked for, else the mode the
    model was trained with (counted again on this data, which may not be the training data).

    Without it a model trained to find a rare class loses it: taylor ranks the channels that
    find pedestrians by the plain cross-entropy, in which pedestrians weigh almost nothing
    (measured on the demo: pedestrian IoU 77.3 -> 0.0 after pruning half the channels)."""
    inherited = (parent_meta.get("class_weights") or {}).get("mode")
    mode = asked if asked is not None else inherited or weighting.NONE
    weights = weighting.resolve(mode, prune_data.train_split, num_classes)
    if weights is not None:
        source = "asked for" if asked is not None else "the model's training"
        say(f"Class weights ({mode}, as {source}): "
            f"{weighting.describe(weights, prune_data.info.classes or [str(i) for i in range(num_classes)])}")
    return {"mode": mode, "weights": weights}


def _slim(net, prune_data, num_classes, epochs, strength, batch_size, lr, seed, threads, class_weights=None):
    from edgeseg.pruning.training import sparsity_phase

    say(f"Sparsity phase: {epochs} epoch(s) with {strength:g} x sum|BN gamma|")
    return sparsity_phase(net, prune_data, num_classes, epochs=epochs, strength=strength, batch_size=batch_size,
                          class_weights=class_weights,
                          lr=lr, seed=seed, threads=threads)
