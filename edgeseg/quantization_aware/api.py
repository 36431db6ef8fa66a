"""``edgeseg qat``: quantization-aware training that ends in calibrate's Q/DQ ONNX layout.

The steps, each by the code that already owns it: export the model to FP32 ONNX
(``export``: BatchNorm folded into the convolutions with frozen statistics, as TensorRT
folds it); calibrate it (``calibrate``: its ranges on ``images`` or the data's train split,
and its Q/DQ model, which says which tensors are quantised); train that ONNX graph in
torch with fake quantisation on exactly those tensors, starting from calibrate's scales
(quantization_aware/graph.py, model.py), with the training loop train, distill and prune use
(``fit``: progress, ``--resume``, torchrun DDP); and write the result with calibrate's
writers (quantization_aware/writer.py). The loss distils from the FP32 graph's own logits (pixel-wise
KL at temperature 4, the way prune's fine-tuning distils), plus the labels' cross-entropy.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

from edgeseg.console import say
from edgeseg.errors import ConfigError, InputFileError
from edgeseg.fileio import atomic_path, check_output_path, write_text_atomic
from edgeseg.spec import ModelFacts
from edgeseg.training.loop import DEFAULT_LR, TrainConfig

# QAT starts from trained weights at a hundredth of the optimizer's from-scratch learning rate (1e-5 AdamW), as
# NVIDIA's "Integer Quantization for Deep Learning Inference" (Wu et al. 2020, arXiv 2004.09602) and its
# pytorch-quantization recommend. Measured (benchmarks/results/qat_lr_families.md, 1 QAT epoch on CamVid without
# drive 0006R0, judged on it): a tenth (1e-4) went 0.15-0.25 below calibration in all six rows measured, its own
# FP32 graph as low (the training moved the model); 1e-5 ended within 0.08 of calibration or above it.
QAT_EPOCHS = 5
LR_FRACTION = 0.01
# the TensorRT whose rules check qat reports on (JetPack 6); build-engine checks the one it builds for
RULES_TARGET = "10.3.0"


def default_training(epochs: int = QAT_EPOCHS) -> TrainConfig:
    """QAT's training options when none are given: ``epochs`` epochs of AdamW at 1e-5, validated after each."""
    return TrainConfig(epochs=epochs, lr=DEFAULT_LR["adamw"] * LR_FRACTION, val_every=1)


def output_paths(model: str, out: Optional[str]):
    """(Q/DQ ONNX, calibration cache, FP32 twin): calibrate's names, ``<base>.calib.cache`` beside ``<base>.int8.onnx``.

    The trained FP32 graph is also written as ``<base>.onnx``: build-engine's implicit INT8 (TensorRT 8.5, the
    DLA) starts from that name, as it does from the model calibrate was given.
    """
    out_path = check_output_path(out or Path(model).with_name(f"{Path(model).stem}.qat.int8.onnx"))
    stem = out_path.name[: -len(".onnx")] if out_path.name.endswith(".onnx") else out_path.stem
    base = stem[: -len(".int8")] if stem.endswith(".int8") else stem
    return out_path, out_path.with_name(f"{base}.calib.cache"), out_path.with_name(f"{base}.calib.onnx")


def qat(model: str, data: str, out: Optional[str] = None, *, training: Optional[TrainConfig] = None,
        images: Optional[str] = None, method: str = "auto", percentile: float = 99.99, num: int = 500,
        learn_scales: bool = True, quantize_outputs: bool = False, keep_float: Sequence[str] = (),
        max_miou_drop: Optional[float] = None, kd_weight: float = 1.0, temperature: float = 4.0,
        resume: bool = False, trust_checkpoint: bool = False,
        facts: Optional[ModelFacts] = None, ignore_index: int = 255) -> dict:
    """Quantization-aware training of ``model`` on ``data``; write the Q/DQ ONNX ``out`` (+ cache, twin, sidecar).

    ``model`` is anything ``prune`` takes (an edgeseg checkpoint, or a state_dict with
    ``facts``). ``training`` holds the loop's options (epochs, batch size, optimizer,
    learning rate, device, ...: the TrainConfig train uses; by default 5 epochs of AdamW
    at 1e-5, and an unset learning rate is a hundredth of the optimizer's usual one).
    Activation scales start from calibrate's ``method`` ranges on ``images`` (default: the
    data's train split) and are learned (LSQ) or, with ``learn_scales=False``, kept.
    ``keep_float`` names ONNX nodes to keep in float besides the logits path, and with
    ``max_miou_drop`` calibrate keeps its most sensitive layers in float as well (picked on
    ``data``'s val split); ``quantize_outputs`` is calibrate's option of that name. ``kd_weight`` (0: labels only)
    and ``temperature`` shape the distillation from the FP32 model. ``resume`` continues
    from ``<out>.state``. Returns the sidecar of ``out``.

    >>> edgeseg.qat("pruned.pt", "camvid/", "pruned.qat.int8.onnx",
    ...             training=TrainConfig(epochs=3))  # doctest: +SKIP
    """
    from edgeseg.checkpoint import load_model
    from edgeseg.data.dataset import ClassCount
    from edgeseg.pruning.training import load_prune_data
    from edgeseg.quant.api import METHODS
    from edgeseg.training import distributed
    from edgeseg.training.state import state_path

    training = training or default_training()
    if training.lr is None:
        training = replace(training, lr=DEFAULT_LR[training.optimizer] * LR_FRACTION)
    if method not in METHODS:
        raise ConfigError(f"Unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}.")
    if kd_weight < 0 or temperature <= 0:
        raise ConfigError(f"--kd-weight must be >= 0 and --temperature > 0, got {kd_weight} and {temperature}.")
    out_path, cache_path, twin_path = output_paths(model, out)
    _check_fp32_name(out_path, twin_path)
    if resume and not state_path(out_path).is_file():
        raise ConfigError(f"--resume found no QAT state {state_path(out_path)}; start without --resume.")
    main = distributed.current().is_main
    with _quiet(not main):
        loaded = load_model(model, trust_checkpoint=trust_checkpoint, facts=facts)
    spec = loaded.input_spec
    if spec is None:
        raise InputFileError(f"{model} does not record its input size; give it with --input-size HEIGHTxWIDTH.")
    said_by = f"{Path(model).name}'s " + ("weights" if loaded.foreign else "checkpoint")
    splits = load_prune_data(data, spec, ClassCount(loaded.num_classes, said_by), ignore_index,
                             training.augment)
    info = splits.info
    loss_settings = {"temperature": temperature, "kd_weight": kd_weight}
    if resume:  # the killed run's objective, checked before exporting and calibrating again
        from edgeseg.training.state import load_state, require_same_loss, resume_settings

        require_same_loss(load_state(state_path(out_path)), state_path(out_path),
                          resume_settings(loss_settings, augment=training.augment, ignore_index=info.ignore_index))
    with tempfile.TemporaryDirectory(prefix="edgeseg-qat-") as folder:
        work = Path(folder)
        # under torchrun every process exports and calibrates for itself (the same numbers, no shared folder
        # needed across nodes); only rank 0 talks
        with _quiet(not main):
            start = _calibrated_start(model, work, data, images, method, percentile, num, training.seed,
                                      quantize_outputs, keep_float, trust_checkpoint, facts, ignore_index,
                                      max_miou_drop)
        student, teacher = _models(start, learn_scales)
        if main:
            say(f"QAT of {len(student.tensors)} activation tensor(s) and {len(student.placement.weights)} weight "
                f"input(s) ({'learned' if learn_scales else 'fixed'} scales from {start['method']}) on "
                f"{len(splits.train_set)} images, {training.epochs} epoch(s)")
        from edgeseg.distillation.api import kd_loss
        from edgeseg.training.loop import fit

        history = fit(student, splits.train_set, splits.val_set, kd_loss(teacher, info.ignore_index, temperature,
                                                                          kd_weight),
                      training, num_classes=loaded.num_classes, ignore_index=info.ignore_index,
                      description="qat", checkpoint_to=str(out_path), resume=resume,
                      loss_settings=loss_settings)
        if not main:
            return {}
        float_nodes = _write(student, start, work, out_path, cache_path, quantize_outputs)
        twin = _write_twin(work / "trained.onnx", twin_path, float_nodes, cache_path, spec, info, model, loaded)
        fp32_path = _write_fp32(work / "trained.onnx", _fp32_path(twin_path), spec, info, model, loaded, start)
    _check_rules(out_path)
    state_path(out_path).unlink(missing_ok=True)  # finished, as train does: the model replaces the state
    settings = {"epochs": training.epochs, "learn_scales": learn_scales, "method": method,
                "selected_method": start["method"], "kd_weight": kd_weight, "temperature": temperature,
                "images": str(images or data), "num_images": start["num_images"], "data": str(data),
                "keep_float": list(keep_float), "max_miou_drop": max_miou_drop,
                "training": asdict(training)}
    say(f"Wrote {out_path.name}, {cache_path.name} (with {twin.name}) and the trained FP32 {fp32_path.name}; "
        f"{len(float_nodes)} node(s) kept in float")
    from edgeseg.sidecar import write_sidecar

    return write_sidecar(
        out_path, "onnx", input_spec=spec, dataset=info, parent=model, stage="qat", precision="int8",
        model={"arch": loaded.arch, "num_classes": loaded.num_classes}, onnx=start["onnx"],
        quantization={"format": "qdq", "source": "qat", "weights": "per-channel symmetric int8",
                      "symmetric": True, "quantize_outputs": quantize_outputs, "float_nodes": float_nodes,
                      "fallback_layers": list(start["fallback"]), "calibration_cache": cache_path.name,
                      "selected_method": start["method"], "scales": "learned (LSQ)" if learn_scales else "fixed"},
        qat=dict(settings, history=history, ptq_accuracy=start["accuracy"],
                 val_miou=history[-1].get("val_miou") if history else None),
        source=loaded.meta.get("source"))


@contextlib.contextmanager
def _quiet(silent: bool):
    """Silence edgeseg's console for the block (the processes other than rank 0 under torchrun)."""
    from edgeseg.console import console

    before = console.quiet
    console.quiet = silent or before
    try:
        yield
    finally:
        console.quiet = before


def _calibrated_start(model, work: Path, data, images, method, percentile, num, seed, quantize_outputs,
                      keep_float, trust_checkpoint, facts, ignore_index, max_miou_drop=None) -> dict:
    """Export the FP32 ONNX and calibrate it: the graph, calibrate's ranges and its Q/DQ layout, in ``work``."""
    import onnx

    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.qdq import ensure_node_names, write_qdq
    from edgeseg.sidecar import read_sidecar

    fp32 = work / "fp32.onnx"
    export(model, str(fp32), data=data, trust_checkpoint=trust_checkpoint, facts=facts)
    ptq = work / "ptq.int8.onnx"
    # no bias correction: QAT trains the biases itself, and the written model must not carry a second shift
    calibrated = calibrate(str(fp32), images or data, str(ptq), method=method, percentile=percentile, num=num,
                           seed=seed, bias_correction=False, quantize_outputs=quantize_outputs, data=data,
                           ignore_index=ignore_index, max_miou_drop=max_miou_drop)
    quantization = calibrated["quantization"]
    saved = json.loads((work / quantization["ranges"]).read_text())
    ranges = {name: (t["low"], t["high"]) for name, t in saved["tensors"].items()}
    fallback = list(quantization.get("fallback_layers") or [])
    if keep_float:
        graph = onnx.load(str(fp32))
        ensure_node_names(graph)
        names = {node.name for node in graph.graph.node}
        unknown = [name for name in keep_float if name not in names]
        if unknown:
            raise ConfigError(f"--keep-float {unknown[0]} is no node of the exported graph; give ONNX node names "
                              f"(e.g. {next(iter(names))}), as build-engine's --layer-precision takes them.")
        fallback = list(dict.fromkeys(fallback + list(keep_float)))
        write_qdq(fp32, ptq, ranges, symmetric=True, nodes_to_exclude=fallback, quantize_outputs=quantize_outputs)
    return {"fp32": fp32, "qdq": ptq, "ranges": ranges, "amax": {n: t["amax"] for n, t in saved["tensors"].items()},
            "method": saved["selected_method"], "num_images": saved["num_images"], "fallback": fallback,
            "accuracy": calibrated.get("accuracy"), "onnx": read_sidecar(fp32).get("onnx")}


def _models(start: dict, learn_scales: bool):
    """(student: the FP32 graph fake-quantised where calibrate's Q/DQ model quantises, teacher: the FP32 graph)."""
    import onnx

    from edgeseg.quantization_aware.graph import OnnxGraph
    from edgeseg.quantization_aware.model import QuantizedGraph
    from edgeseg.quantization_aware.placement import read_placement

    placement = read_placement(onnx.load(str(start["qdq"])))
    student = QuantizedGraph(OnnxGraph(onnx.load(str(start["fp32"]))), placement, learn_scales)
    teacher = OnnxGraph(onnx.load(str(start["fp32"])), trainable=False).eval()
    return student, teacher


def _write(student, start: dict, work: Path, out_path: Path, cache_path: Path, quantize_outputs: bool):
    """The Q/DQ ONNX and the TensorRT cache of the trained student; returns the nodes kept in float."""
    from edgeseg.quantization_aware.writer import learned_ranges, with_weights, write_qat_qdq
    from edgeseg.quant.trt_cache import format_cache

    trained = work / "trained.onnx"
    with_weights(start["fp32"], student.graph.learned_weights(), trained)
    amax = student.amax()
    with atomic_path(out_path) as tmp:
        float_nodes = write_qat_qdq(trained, tmp, learned_ranges(start["ranges"], amax),
                                    float_nodes=start["fallback"], quantize_outputs=quantize_outputs)
    # the cache holds every tensor, as calibrate's does: the learned scales where QAT learned them
    write_text_atomic(cache_path, format_cache({**start["amax"], **amax}, start["method"]))
    return float_nodes


def _write_twin(trained: Path, twin_path: Path, float_nodes, cache_path: Path, spec, info, model, loaded) -> Path:
    """The trained FP32 graph that TensorRT's implicit INT8 builds from with the cache (quant/cache_model.py)."""
    from edgeseg.quant.cache_model import write_cache_model
    from edgeseg.sidecar import write_sidecar

    with atomic_path(twin_path) as tmp:
        _changed, pinned = write_cache_model(trained, tmp, {}, float_nodes)
    write_sidecar(twin_path, "onnx", input_spec=spec, dataset=info, parent=model, stage="qat",
                  model={"arch": loaded.arch, "num_classes": loaded.num_classes}, precision="fp32",
                  quantization={"format": "fp32 twin for TensorRT implicit INT8", "source": "qat",
                                "calibration_cache": cache_path.name, "bias_corrected_layers": 0,
                                "float_layers": pinned})
    return twin_path


def _fp32_path(twin_path: Path) -> Path:
    return twin_path.with_name(twin_path.name[: -len(".calib.onnx")] + ".onnx")


def _check_fp32_name(out_path: Path, twin_path: Path) -> None:
    """Refuse before any work to overwrite a ``<base>.onnx`` that qat did not write (an export of the same model)."""
    from edgeseg.sidecar import read_sidecar

    fp32 = _fp32_path(twin_path)
    if fp32.exists() and read_sidecar(fp32).get("stage") != "qat":
        raise ConfigError(f"qat writes its trained FP32 graph to {fp32.name}, which exists and is not qat's; choose "
                          f"another --out (e.g. {fp32.stem}.qat.int8.onnx) or move {fp32.name}.")


def _write_fp32(trained: Path, path: Path, spec, info, model, loaded, start: dict) -> Path:
    """The trained FP32 graph under ``<base>.onnx``, where build-engine --int8 looks for the cache's model."""
    import shutil

    from edgeseg.sidecar import write_sidecar

    with atomic_path(path) as tmp:
        shutil.copyfile(trained, tmp)
    write_sidecar(path, "onnx", input_spec=spec, dataset=info, parent=model, stage="qat", precision="fp32",
                  model={"arch": loaded.arch, "num_classes": loaded.num_classes}, onnx=start["onnx"],
                  source=loaded.meta.get("source"))
    return path


def _check_rules(out_path: Path) -> None:
    """Say so when the written model would not parse on TensorRT (JetPack 6's 10.3).

    calibrate's writer keeps biases float and DequantizeLinear inputs INT8, so a QAT model
    passes wherever its FP32 graph does; an operator that TensorRT lacks is the model's, not
    QAT's, and the model still runs on ONNX Runtime, so it is said, not refused (build-engine
    refuses it for the TensorRT it builds for).
    """
    from edgeseg.engine.trt_rules import check_for_tensorrt

    problems = check_for_tensorrt(out_path, RULES_TARGET)
    if problems:
        say(f"[yellow]{out_path.name} will not parse on TensorRT {RULES_TARGET}: {problems[0]}"
            f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}[/yellow]")
