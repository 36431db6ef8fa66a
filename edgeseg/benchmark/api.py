"""``edgeseg bench`` and ``edgeseg eval``: accuracy over a whole split and latency, through a Runner."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from edgeseg.benchmark.memory import (DeviceMemory, RssSampler, cuda_free_memory_reader, current_rss_mb,
                                      lifetime_peak_rss_mb)
from edgeseg.benchmark.pipeline import run_pipeline
from edgeseg.benchmark.table import print_table
from edgeseg.benchmark.timing import latency_stats, time_inference
from edgeseg.console import progress_bar, say
from edgeseg.data.dataset import (DEFAULT_IGNORE_INDEX, ClassCount, SegmentationSplit, check_class_count,
                                  resolve_split)
from edgeseg.errors import AccuracyError, ConfigError, DataError
from edgeseg.fileio import write_json_atomic
from edgeseg.metrics import summarize
from edgeseg.onnx_size import model_size
from edgeseg.runtime import native
from edgeseg.runtime.base import Runner
from edgeseg.runtime.loader import TORCH_SUFFIXES, Artifact, describe, open_runner, size_bytes
from edgeseg.runtime.outputs import LOGITS, output_kind, to_class_map
from edgeseg.runtime.preprocess import preprocess, resize_label
from edgeseg.sidecar import model_output
from edgeseg.spec import ModelFacts


def model_classes(artifact: Artifact) -> Optional[ClassCount]:
    """The artifact's class count and what said it (its sidecar, checkpoint, output or --num-classes), if known."""
    if artifact.dataset is None:
        return None
    return ClassCount.of_model(artifact.path, artifact.meta, artifact.dataset.num_classes)


def model_ignore_index(artifact: Optional[Artifact], given: Optional[int]) -> int:
    """The unlabelled value for data without a dataset.yaml: ``given``, else the one ``artifact`` was trained with,
    else 255."""
    if given is not None:
        return given
    if artifact is not None and artifact.dataset is not None:
        value = artifact.dataset.ignore_index
        if value != DEFAULT_IGNORE_INDEX:  # say where a value other than the usual one came from
            say(f"Label value {value} is unlabelled, as {artifact.path.name} was trained (where --data has no "
                f"dataset.yaml; --ignore-index changes it)")
        return value
    return DEFAULT_IGNORE_INDEX


def check_classes(artifact: Artifact, split: SegmentationSplit) -> None:
    """Refuse an artifact whose class count is not the data's, naming what said each and how to change it."""
    counted = model_classes(artifact)
    if counted is not None:
        check_class_count(counted, split)


def accuracy_pass(runner: Runner, artifact: Artifact, split: SegmentationSplit, description: str) -> Dict[str, object]:
    """mIoU over the whole split from one global confusion matrix, with the time of each phase.

    Predictions are made at the model's input size and resized (nearest) to the label's
    native size, so mIoU is always measured on the original labels. Decoding and
    pre-processing run ahead on one thread, post-processing behind on another.
    """
    info = split.info
    confusion = np.zeros((info.num_classes, info.num_classes), dtype=np.int64)
    spec = artifact.input_spec
    decode_seconds = [0.0]

    def load(index):
        started = time.perf_counter()
        image, label = split.image(index), split.label(index)
        decode_seconds[0] += time.perf_counter() - started
        return preprocess(image, spec), label

    def infer(item):
        batch, label = item
        return runner.infer(batch), label

    with progress_bar(description, len(split)) as advance:
        def finish(item):
            output, label = item
            if output_kind(output) == LOGITS and output.shape[1] != info.num_classes:
                check_class_count(ClassCount(int(output.shape[1]), f"{artifact.path.name}'s output"), split)
                raise DataError(f"{artifact.path.name}'s output says {output.shape[1]} classes but the data has "
                                f"{info.num_classes}; use a model trained for this data.")
            # logits get the host argmax; a class-map model (export --argmax) did it in the graph
            pred = resize_label(to_class_map(output, info.num_classes)[0], label.shape[0], label.shape[1])
            native.accumulate_confusion(confusion, pred, label, info.ignore_index)
            advance(1)

        seconds = run_pipeline(len(split), load, infer, finish)
    result = summarize(confusion, info.class_names())
    phases = {"decode": decode_seconds[0], "preprocess": seconds["load"] - decode_seconds[0],
              "inference": seconds["infer"], "postprocess": seconds["finish"]}
    result["phases_ms"] = {k: round(1e3 * v / len(split), 4) for k, v in phases.items()}
    result["wall_ms_per_image"] = round(1e3 * seconds["wall"] / len(split), 4)
    result["confusion"] = confusion.tolist()
    return result


def _open(path, device, threads, trust_checkpoint, trust_engine, allow_engine_host_code=False, facts=None,
          precision=None):
    artifact = describe(path, trust_checkpoint, facts)
    return artifact, open_runner(artifact, device, threads, trust_checkpoint, trust_engine, allow_engine_host_code,
                                 precision=precision)


TORCH_PRECISIONS = ("fp32", "fp16")
# What a runner's own device-memory figure covers, for when no CUDA library can measure it (bench says which)
RUNNER_MEMORY_LABELS = {
    "pytorch": "torch.cuda.max_memory_allocated: the peak of PyTorch's tensors (the CUDA context and the "
               "allocator's cache are not counted)",
    "tensorrt": "TensorRT's activation memory plus edgeseg's I/O buffers (the engine's weights are not counted)",
}


def _power_sampler(power: bool):
    if not power:
        import contextlib

        return contextlib.nullcontext(None)
    from edgeseg.benchmark.power import TegrastatsSampler

    return TegrastatsSampler()


def artifact_row(artifact: Artifact, runner: Runner, device: str, batch_size: int = 1) -> dict:
    """What a bench row says about the artifact itself: backend, precision, input, size, params, MACs."""
    return {"artifact": str(artifact.path), "backend": runner.backend, "precision": runner.precision,
            "device": device, "input": [artifact.input_spec.height, artifact.input_spec.width],
            "batch": batch_size, "output": model_output(artifact.meta)["kind"],
            **model_size(artifact.meta, artifact.path, (artifact.input_spec.height, artifact.input_spec.width)),
            "size_mb": round(size_bytes(artifact.path) / 1e6, 4)}


def timing_row(host: List[float], compute: List[float], batch_size: int = 1) -> dict:
    """Latency statistics (host and compute), iterations and FPS from per-call milliseconds."""
    latency = latency_stats(host)
    return {"latency_ms": latency, "compute_latency_ms": latency_stats(compute), "iterations": len(host),
            "fps": round(1e3 * batch_size / latency["mean"], 3)}


def bench_one(path: Union[str, Path], split: Optional[SegmentationSplit], *, warmup: int = 10, iters: int = 50,
              warmup_ms: float = 0.0, duration: float = 0.0, batch_size: int = 1, device: str = "cpu",
              threads: Optional[int] = None, power: bool = False, trust_checkpoint: bool = False,
              trust_engine: bool = False, allow_engine_host_code: bool = False,
              facts: Optional[ModelFacts] = None, precision: Optional[str] = None) -> dict:
    """Latency (and, with a split, accuracy) of one artifact; ``facts`` describe one edgeseg did not make.

    ``precision`` applies to PyTorch checkpoints (fp16: CUDA FP16 autocast); other artifacts
    run at the precision they were built with.
    """
    artifact, runner = _open(path, device, threads, trust_checkpoint, trust_engine, allow_engine_host_code, facts,
                             precision if artifact_is_pytorch(path) else None)
    if split is not None:
        check_classes(artifact, split)
    result = artifact_row(artifact, runner, device, batch_size)
    memory = DeviceMemory(cuda_free_memory_reader() if runner.device != "cpu" else None)
    memory.start()  # before activation: the model's weights count too
    with runner:
        if split is not None:
            sample = preprocess(split.image(0), artifact.input_spec)
        else:
            from edgeseg.data.synthetic import render_scene

            spec = artifact.input_spec
            sample = preprocess(render_scene(np.random.default_rng(0), spec.height, spec.width)[0], spec)
        batch = np.repeat(sample, batch_size, axis=0)
        time_inference(runner, batch, warmup=warmup, iters=0, warmup_ms=warmup_ms)
        memory.mark()
        rss_after_warmup = current_rss_mb()
        sampler = _power_sampler(power)
        with sampler, RssSampler() as rss:
            started = time.perf_counter()
            host, compute = time_inference(runner, batch, warmup=0, iters=iters, duration_s=duration)
            seconds = time.perf_counter() - started
        if rss_after_warmup is not None:
            result["rss_mb"] = {"after_warmup": round(rss_after_warmup, 2), "peak_while_timing": round(rss.peak_mb, 2),
                                "growth_percent": round(100 * (rss.peak_mb / rss_after_warmup - 1), 3)}
        result.update(timing_row(host, compute, batch_size))
        if power:
            from edgeseg.benchmark.power import summarize_power

            summary = summarize_power(sampler.samples, frames=len(host) * batch_size, seconds=seconds)
            result["power"] = {"average_w": summary.average_w, "energy_per_frame_mj": summary.energy_per_frame_mj,
                               "samples": summary.samples, "rails_average_w": summary.rails_average_w}
        memory.mark()
        if split is not None:
            result["num_images"] = len(split)
            result.update(accuracy_pass(runner, artifact, split, f"eval {artifact.path.name}"))
            memory.mark()
        result.update(_device_memory(runner, memory))
    result["peak_rss_mb"] = lifetime_peak_rss_mb()
    return result


def display_name(path: Union[str, Path]) -> str:
    """A row's name: the file's, or a Hugging Face snapshot's repository (not its commit hash)."""
    from edgeseg.huggingface import display_name as folder_name

    return folder_name(Path(path)) if Path(path).is_dir() else Path(path).name


def artifact_is_pytorch(path: Union[str, Path]) -> bool:
    """A PyTorch model: a checkpoint file, or a Hugging Face folder."""
    from edgeseg.huggingface import find_folder

    return Path(path).suffix.lower() in TORCH_SUFFIXES or find_folder(path) is not None


def check_precision(models: Sequence[Union[str, Path]], precision: Optional[str], device: str) -> None:
    """One sentence, before anything runs, where ``--precision`` cannot apply to what was asked."""
    if precision is None:
        return
    if precision not in TORCH_PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(TORCH_PRECISIONS)}, got '{precision}'.")
    if not any(artifact_is_pytorch(m) for m in models):
        raise ConfigError(f"--precision {precision} applies to PyTorch checkpoints (.pt), and none was given: ONNX "
                          f"and engine files run at the precision they were built with (build-engine --fp16 or "
                          f"--int8).")
    if precision == "fp16" and device == "cpu":
        raise ConfigError("--precision fp16 runs PyTorch checkpoints under CUDA FP16 autocast, which needs a GPU: "
                          "add --device cuda (on the CPU PyTorch runs FP32).")


def _device_memory(runner: Runner, memory: DeviceMemory) -> dict:
    """``device_memory_mb`` and what it is: measured with CUDA's memory info where a library can read it."""
    if runner.device == "cpu":
        return {"device_memory_mb": None, "device_memory_source": "none: the model ran on the CPU"}
    if memory.held_mb is not None:
        return {"device_memory_mb": memory.held_mb,
                "device_memory_source": f"{memory.library}: free GPU memory before activation minus its lowest "
                                        f"reading after warm-up, timing and the accuracy pass (everything the runner "
                                        f"held, weights included; other processes on the GPU count too)"}
    own = runner.peak_device_memory_mb()
    label = RUNNER_MEMORY_LABELS.get(runner.backend)
    if own is None or label is None:
        return {"device_memory_mb": None,
                "device_memory_source": f"not measured: {runner.backend} reports none, and no CUDA library (torch, "
                                        f"cuda-python, pycuda) could read the GPU's memory info"}
    return {"device_memory_mb": own, "device_memory_source": f"{label}; no CUDA library could read the GPU's "
                                                             f"memory info to measure it whole"}


def bench(models: Union[str, Sequence[str]], data: Optional[str] = None, *, json_out: Optional[str] = None,
          warmup: int = 10, iters: int = 50, warmup_ms: float = 0.0, duration: float = 0.0, batch_size: int = 1,
          max_images: Optional[int] = None, device: str = "cpu", threads: Optional[int] = None,
          power: bool = False, min_miou: Optional[float] = None, trust_checkpoint: bool = False,
          trust_engine: bool = False, allow_engine_host_code: bool = False, show: bool = True,
          facts: Optional[ModelFacts] = None, precision: Optional[str] = None,
          ignore_index: Optional[int] = None) -> List[dict]:
    """Time each artifact and measure its mIoU on ``data``'s val split; print one comparison table.

    ``data``'s class count comes from its dataset.yaml (or standard layout), else from the
    first model; every model must have it. ``ignore_index`` is the unlabelled value where
    no dataset.yaml says it (default: the one the first model was trained with, else 255).

    ``precision="fp16"`` runs the PyTorch checkpoints among ``models`` under CUDA FP16
    autocast (``device="cuda"``); ONNX and engine files keep the precision they were built with.

    >>> edgeseg.bench(["student.pt", "student.onnx"], data="synthetic")  # doctest: +SKIP
    """
    models = [models] if isinstance(models, (str, Path)) else list(models)
    if not models:
        raise ConfigError("Give at least one artifact to bench.")
    if warmup < 0 or iters < 1 or batch_size < 1:
        raise ConfigError("--warmup must be >= 0, and --iters and --batch at least 1.")
    if warmup_ms < 0 or duration < 0:
        raise ConfigError("--warmup-ms and --duration cannot be negative.")
    check_precision(models, precision, device)
    split = None
    if data:  # every model must have the data's classes: refused before any of them runs
        described = [describe(m, trust_checkpoint, facts) for m in models]
        split = _val_split(data, max_images, model_classes(described[0]),
                           model_ignore_index(described[0], ignore_index))
        for artifact in described[1:]:
            check_classes(artifact, split)
    results = [bench_one(m, split, warmup=warmup, iters=iters, warmup_ms=warmup_ms, duration=duration,
                         batch_size=batch_size, device=device, threads=threads, power=power,
                         trust_checkpoint=trust_checkpoint, trust_engine=trust_engine,
                         allow_engine_host_code=allow_engine_host_code, facts=facts, precision=precision)
               for m in models]
    if show:
        print_table([dict(r, stage=display_name(r["artifact"])) for r in results])
    if json_out:
        write_json_atomic(json_out, results[0] if len(results) == 1 else {"results": results})
    _check_min_miou(results, min_miou)
    return results


def eval(model: str, data: str, *, json_out: Optional[str] = None, max_images: Optional[int] = None,
         device: str = "cpu", threads: Optional[int] = None, trust_checkpoint: bool = False,
         trust_engine: bool = False, allow_engine_host_code: bool = False, min_miou: Optional[float] = None,
         facts: Optional[ModelFacts] = None, ignore_index: Optional[int] = None) -> dict:
    """mIoU and per-class IoU of ``model`` on ``data``'s val split (no timing).

    ``data``'s class count comes from its dataset.yaml (or standard layout), else from the
    model; ``ignore_index`` is the unlabelled value where no dataset.yaml says it (default: the one the model was
    trained with, else 255).

    >>> edgeseg.eval("student.onnx", data="camvid/")  # doctest: +SKIP
    """
    artifact = describe(model, trust_checkpoint, facts)
    split = _val_split(data, max_images, model_classes(artifact), model_ignore_index(artifact, ignore_index))
    runner = open_runner(artifact, device, threads, trust_checkpoint, trust_engine, allow_engine_host_code)
    with runner:
        result = {"artifact": str(artifact.path), "backend": runner.backend, "precision": artifact.precision,
                  "num_images": len(split), **accuracy_pass(runner, artifact, split, f"eval {artifact.path.name}")}
    say(f"{artifact.path.name}: mIoU {result['miou']:.2f}% on {len(split)} images of {split.root}")
    for name, iou in result["per_class_iou"].items():
        say(f"  {name:<16} {'-' if iou is None else f'{iou:6.2f}'}")
    if json_out:
        write_json_atomic(json_out, result)
    _check_min_miou([result], min_miou)
    return result


def _val_split(data: str, max_images: Optional[int], classes: Optional[ClassCount] = None,
               ignore_index: int = DEFAULT_IGNORE_INDEX) -> SegmentationSplit:
    split = resolve_split(data, "val", classes=classes, ignore_index=ignore_index)
    if max_images:
        split = split.subset(range(min(max_images, len(split))))
    return split


def _check_min_miou(results: List[dict], min_miou: Optional[float]) -> None:
    if min_miou is None:
        return
    for result in results:
        if "miou" in result and result["miou"] < min_miou:
            raise AccuracyError(f"{Path(result['artifact']).name} reaches mIoU {result['miou']:.2f}%, below "
                                f"--min-miou {min_miou}.")
