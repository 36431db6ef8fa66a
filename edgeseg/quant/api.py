"""``edgeseg calibrate``: activation ranges from real images -> Q/DQ ONNX + TensorRT cache + ranges JSON."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edgeseg.console import progress_bar, say
from edgeseg.exporting.argmax import add_class_map_file
from edgeseg.data.images import list_images, read_image
from edgeseg.errors import ConfigError, DataError, InputFileError
from edgeseg.fileio import (
    atomic_path,
    check_output_path,
    require_file,
    require_onnx_model,
    write_json_atomic,
    write_text_atomic,
)
from edgeseg.quant.collect import collect_histograms
from edgeseg.quant.qdq import write_qdq
from edgeseg.quant.trt_cache import format_cache
from edgeseg.runtime.preprocess import preprocess
from edgeseg.foreign_onnx import onnx_meta
from edgeseg.sidecar import read_sidecar, spec_from_sidecar, write_sidecar
from edgeseg.spec import ModelFacts

METHODS = ("auto", "minmax", "percentile", "entropy", "mse")
AUTO_CANDIDATES = ("minmax", "percentile", "entropy", "mse")
# Images the bias-correction pass uses (NNCF's FastBiasCorrection uses 100 as well: the
# per-channel mean shifts are stable long before that), and those --method auto compares on.
CONV_ERROR_IMAGES = 100
AGREEMENT_IMAGES = 50


def warn_if_kernels_saturate() -> None:
    """Say so where ONNX Runtime's fused INT8 kernels saturate on this CPU (quant/cpu_int8.py)."""
    from edgeseg.quant.cpu_int8 import outputs_layout_warning

    warning = outputs_layout_warning()
    if warning:
        say(f"[yellow]{warning}[/yellow]")


def calibration_images(images: str | Path, num: int, seed: int) -> List[Path]:
    """A deterministic sample of ``num`` image files from a folder (or a split's images/ folder)."""
    folder = Path(images)
    if str(images).lower() == "synthetic":
        from edgeseg.data.synthetic import default_synthetic_root

        folder = default_synthetic_root() / "train" / "images"
    if not folder.is_dir():
        raise DataError(f"Calibration folder {folder} does not exist; give a folder of images.")
    if (folder / "images").is_dir():
        folder = folder / "images"
    elif (folder / "train" / "images").is_dir():
        folder = folder / "train" / "images"
    files = list_images(folder)
    if not files:
        raise DataError(f"Calibration folder {folder} holds no images (.jpg, .png, ...); add some from your "
                        f"deployment domain.")
    if num < len(files):
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), size=num, replace=False))]
    return files


def calibrate(model: str, images: str, out: Optional[str] = None, *, method: str = "auto",
              percentile: float = 99.99, num: int = 500, seed: int = 0, symmetric: bool = True,
              bias_correction: bool = True, quantize_outputs: bool = False,
              data: Optional[str] = None, max_miou_drop: Optional[float] = None, report: bool = False,
              sensitivity_images: int = 50, max_images: Optional[int] = None, device: str = "cpu",
              facts: Optional[ModelFacts] = None, ignore_index: int = 255) -> dict:
    """Calibrate the FP32 ONNX ``model`` on ``images``; write ``<stem>.int8.onnx``, ``.calib.cache`` and ``.ranges.json``.

    Images are pre-processed exactly as at inference, from the model's sidecar. With
    labelled ``data``, INT8 is evaluated against FP32; with ``max_miou_drop`` the most
    sensitive layers are kept in float until the drop is within budget; ``report``
    prints the per-layer sensitivity table. ``data``'s class count is the model's where no
    dataset.yaml says it; ``ignore_index`` is its unlabelled value where none says it.

    >>> edgeseg.calibrate("pruned.onnx", "calibration/", method="entropy")  # doctest: +SKIP
    """
    model_path = require_file(model, "ONNX model")
    if method not in METHODS:
        raise ConfigError(f"Unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}.")
    if not 0 < percentile <= 100:
        raise ConfigError(f"--percentile must be in (0, 100], got {percentile}.")
    if num < 1:
        raise ConfigError(f"--num must be at least 1, got {num}.")
    if (max_miou_drop is not None or report) and not data:
        raise ConfigError("--max-miou-drop and --report need labelled --data to measure mIoU on.")
    if max_miou_drop is not None and max_miou_drop < 0:
        raise ConfigError(f"--max-miou-drop must be >= 0, got {max_miou_drop}.")
    meta = onnx_meta(model_path, read_sidecar(model_path), facts)  # an ONNX from another tool: its graph + facts
    if meta.get("precision") not in (None, "fp32"):
        raise InputFileError(f"{model} is already {meta.get('precision')}; calibrate the FP32 ONNX model instead.")
    spec, info = spec_from_sidecar(meta)
    require_onnx_model(model_path)
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.stem
    out_path = check_output_path(out or model_path.with_name(f"{stem}.int8.onnx"))
    out_stem = out_path.name[: -len(".onnx")] if out_path.name.endswith(".onnx") else out_path.stem
    out_base = out_stem[: -len(".int8")] if out_stem.endswith(".int8") else out_stem
    cache_path = out_path.with_name(f"{out_base}.calib.cache")
    ranges_path = out_path.with_name(f"{out_base}.ranges.json")

    # a class-map model is calibrated on its logits; the temporary folder lives as long as `logits_folder`
    measured, class_map_dtype, logits_folder = _logits_model(model_path)
    files = calibration_images(images, num, seed)
    say(f"Calibrating {model_path.name} on {len(files)} images ({method}"
        f"{f' {percentile}' if method == 'percentile' else ''}, {'symmetric' if symmetric else 'asymmetric'})")
    if quantize_outputs:
        warn_if_kernels_saturate()
    batches = (preprocess(read_image(f), spec) for f in files)
    with progress_bar("collect ranges", len(files)) as advance:
        histograms = collect_histograms(measured, batches, advance, device=device)
    candidates = AUTO_CANDIDATES if method == "auto" else (method,)
    amax_of = {m: {name: h.amax(m, percentile) for name, h in histograms.items()} for m in candidates}
    ranges_of = {m: {name: _range(h, amax_of[m][name], symmetric) for name, h in histograms.items()}
                 for m in candidates}
    shifts_of = (_bias_shifts(measured, histograms, ranges_of, symmetric, files, spec, device) if bias_correction
                 else {m: {} for m in candidates})
    agreement = None
    chosen = method
    if method == "auto":
        chosen, agreement = _most_faithful(measured, ranges_of, shifts_of, symmetric, quantize_outputs, files, spec)
        say(f"auto: {chosen} ({', '.join(f'{m} {a:.2f}%' for m, a in agreement.items())} of pixels agree with FP32)")
    amax, ranges, shifts = amax_of[chosen], ranges_of[chosen], shifts_of[chosen]
    accuracy = None
    fallback: List[str] = []
    if data:
        from edgeseg.data.dataset import ClassCount

        model_classes = ClassCount.of_model(model_path, meta, info.num_classes) if info else None
        fallback, accuracy = _accuracy_budget(measured, ranges, symmetric, shifts, quantize_outputs, data, spec,
                                              max_miou_drop, report, sensitivity_images, max_images,
                                              model_classes=model_classes, ignore_index=ignore_index)
    with atomic_path(out_path) as tmp:
        float_nodes = write_qdq(measured, tmp, ranges, symmetric=symmetric, nodes_to_exclude=fallback,
                                bias_shifts=shifts, quantize_outputs=quantize_outputs)
        if class_map_dtype:  # the ArgMax -> Cast tail goes back on after quantisation, outside it
            add_class_map_file(tmp, class_map_dtype)
    write_text_atomic(cache_path, format_cache(amax, chosen))
    twin_path = _write_cache_twin(model_path, out_path.with_name(f"{out_base}.calib.onnx"), shifts, float_nodes,
                                  cache_path, spec, info, meta)
    settings = {"method": method, "selected_method": chosen, "argmax_agreement_percent": agreement,
                "percentile": percentile if chosen == "percentile" else None,
                "symmetric": symmetric, "bias_correction": bool(bias_correction),
                "bias_corrected_layers": len([name for name in shifts if name not in float_nodes]),
                "quantize_outputs": quantize_outputs, "num_images": len(files), "seed": seed, "images": str(images)}
    # which images the seed picked, so a calibration can be reproduced or audited image by image
    folder = Path(os.path.commonpath([str(Path(f).parent) for f in files]))
    image_files = [str(Path(f).relative_to(folder)) for f in files]
    write_json_atomic(ranges_path, {**settings, "image_files": image_files, "tensors": {
        name: {"amax": amax[name], "min": histograms[name].min, "max": histograms[name].max,
               "low": ranges[name][0], "high": ranges[name][1]} for name in histograms}})
    say(f"Wrote {out_path.name}, {cache_path.name} (with {twin_path.name} for TensorRT's implicit INT8) and "
        f"{ranges_path.name}; {len(float_nodes)} node(s) kept in float")
    return write_sidecar(out_path, "onnx", input_spec=spec, dataset=info, parent=model_path, stage="calibrate",
                         model=meta.get("model"), precision="int8", onnx=meta.get("onnx"),
                         quantization=dict(settings, format="qdq", weights="per-channel symmetric int8",
                                           float_nodes=float_nodes, fallback_layers=fallback,
                                           calibration_cache=cache_path.name, ranges=ranges_path.name),
                         accuracy=accuracy, source=meta.get("source"))


def _logits_model(model_path: Path) -> tuple:
    """(model to measure, class-map dtype, folder holding it): an --argmax model is measured without its tail.

    Ranges, bias shifts, method selection and mIoU all work on logits; the tail (ArgMax
    and Cast) has nothing to quantise and is appended again to the Q/DQ model in float.
    """
    import tempfile

    import onnx

    from edgeseg.exporting.argmax import class_map_tail, strip_class_map

    model = onnx.load(str(model_path))
    dtype = class_map_tail(model)
    if dtype is None:
        return model_path, None, None
    folder = tempfile.TemporaryDirectory(prefix="edgeseg-logits-")
    logits = Path(folder.name) / "logits.onnx"
    onnx.save(strip_class_map(model), str(logits))
    return logits, dtype, folder  # the folder is deleted when the caller drops it


def _write_cache_twin(model_path: Path, twin_path: Path, shifts, float_nodes: List[str], cache_path: Path, spec,
                      info, meta: dict) -> Path:
    """The bias-corrected FP32 twin that TensorRT's implicit INT8 builds from (quant/cache_model.py)."""
    from edgeseg.quant.cache_model import write_cache_model

    with atomic_path(twin_path) as tmp:
        corrected, pinned = write_cache_model(model_path, tmp, shifts, float_nodes)
    write_sidecar(twin_path, "onnx", input_spec=spec, dataset=info, parent=model_path, stage="calibrate",
                  model=meta.get("model"), precision="fp32", onnx=meta.get("onnx"),
                  quantization={"format": "fp32 twin for TensorRT implicit INT8", "calibration_cache": cache_path.name,
                                "bias_corrected_layers": len(corrected), "float_layers": pinned})
    return twin_path


def _range(histogram, amax: float, symmetric: bool) -> tuple:
    if symmetric:
        return (-amax, amax)
    return (max(histogram.min, -amax), min(histogram.max, amax))  # the observed interval, clipped at amax


def _bias_shifts(model_path: Path, histograms, ranges_of: Dict[str, dict], symmetric: bool, files: List[Path], spec,
                 device: str) -> Dict[str, Dict[str, np.ndarray]]:
    """{method: {conv: mean INT8 output shift}} for each candidate's ranges, from one pass over calibration images."""
    import onnx

    from edgeseg.quant.collect import stream_activations
    from edgeseg.quant.conv_error import measurable_convs, measure_shifts
    from edgeseg.quant.qdq import ensure_node_names, logits_nodes

    model = onnx.load(str(model_path))
    ensure_node_names(model)  # the names write_qdq gives, so shifts and exclusion lists match
    convs = measurable_convs(model, histograms, skip=logits_nodes(model))
    inputs = list(dict.fromkeys(node.input[0] for node in convs))
    candidates = {tensor: {m: ranges[tensor] for m, ranges in ranges_of.items()} for tensor in inputs}
    sample = _spread(files, CONV_ERROR_IMAGES)
    with progress_bar("bias correction", len(sample)) as advance:
        def activations():
            batches = (preprocess(read_image(f), spec) for f in sample)
            for values in stream_activations(model_path, batches, inputs, device):
                yield values
                advance(1)

        shifts = measure_shifts(model, convs, candidates, activations(), symmetric)
    return {m: {conv: by_method[m] for conv, by_method in shifts.items()} for m in ranges_of}


def _most_faithful(model_path: Path, ranges_of, shifts_of, symmetric: bool, quantize_outputs: bool,
                   files: List[Path], spec) -> tuple:
    """--method auto: the candidate whose INT8 model's argmax agrees with FP32's on the most pixels (no labels)."""
    import tempfile

    from edgeseg.quant.selection import PredictionAgreement

    batches = [preprocess(read_image(f), spec) for f in _spread(files, AGREEMENT_IMAGES)]
    judge = PredictionAgreement(model_path, batches)
    agreement = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-auto-") as folder, \
            progress_bar("auto: compare methods", len(ranges_of)) as advance:
        for method, ranges in ranges_of.items():
            candidate = Path(folder) / f"{method}.onnx"
            write_qdq(model_path, candidate, ranges, symmetric=symmetric, bias_shifts=shifts_of[method],
                      quantize_outputs=quantize_outputs)
            agreement[method] = judge.percent(candidate)
            advance(1)
    return max(agreement, key=agreement.get), agreement


def _spread(files: List[Path], count: int) -> List[Path]:
    """Up to ``count`` files spread evenly over the list."""
    return files[:: max(1, len(files) // count)][:count]


def _accuracy_budget(model_path, ranges, symmetric, shifts, quantize_outputs, data, spec, max_miou_drop, report,
                     sensitivity_images, max_images, *, model_classes=None, ignore_index: int = 255):
    """Measure INT8 against FP32 on ``data``; with a budget or ``report``, pick float layers on part of it.

    Ranking layers and fitting the budget on the same images that are then reported would
    flatter the result (the layers kept in float are those that fix *those* images). So
    when layers are picked, the val split is cut in two: the first half (the pick images)
    ranks the layers and fits the budget, and the figures reported as the result (FP32,
    INT8 with every layer, INT8 with the fallback, the drop) are measured on the second
    half (the report images), which picking never sees. Without a budget or ``report``
    nothing is picked and every image is a report image. ``accuracy["split"]`` says
    which images each figure is on. ``model_classes`` (the model's ClassCount) and
    ``ignore_index`` apply where ``data`` has no dataset.yaml saying them.
    """
    from edgeseg.quant.qdq import ensure_node_names, logits_nodes
    from edgeseg.quant.sensitivity import Quantizer, fit_budget, load_eval_set, onnx_miou, quantized_layers, rank_layers

    import onnx

    evalset = load_eval_set(data, spec, max_images, classes=model_classes, ignore_index=ignore_index)
    total = len(evalset.batches)
    accuracy = {"data": str(data), "num_images": total, "max_miou_drop": max_miou_drop}
    if max_miou_drop is None and not report:
        with Quantizer(model_path, ranges, symmetric, evalset, shifts, quantize_outputs) as quantizer:
            fp32_miou, int8_miou = onnx_miou(model_path, evalset), quantizer.miou([])
        say(f"mIoU on all {total} images of {data}: FP32 {fp32_miou:.2f}%, INT8 {int8_miou:.2f}% "
            f"(drop {fp32_miou - int8_miou:.2f})")
        accuracy["split"] = {"report": {"images": f"1-{total}", "count": total,
                                        "figures": "all of them (no layers were picked)"}}
        accuracy.update(fp32_miou=fp32_miou, int8_miou_all_layers=int8_miou, int8_miou=int8_miou,
                        miou_drop=round(fp32_miou - int8_miou, 4))
        return [], accuracy
    if total < 2:
        raise ConfigError(f"--max-miou-drop and --report pick layers on one part of --data and report on the rest, "
                          f"so --data needs at least 2 labelled images; {data} has {total}.")
    pick, held_out = evalset.halves()
    cut = len(pick.batches)
    accuracy["split"] = {
        "pick": {"images": f"1-{cut}", "count": cut,
                 "figures": "pick_miou, sensitivity, fallback_steps: ranking layers and fitting the budget"},
        "report": {"images": f"{cut + 1}-{total}", "count": total - cut,
                   "figures": "fp32_miou, int8_miou_all_layers, int8_miou, miou_drop: never seen by picking"}}
    say(f"Picking float layers on val images 1-{cut} of {data}; reporting on images {cut + 1}-{total}, "
        f"which picking never sees")
    with Quantizer(model_path, ranges, symmetric, pick, shifts, quantize_outputs) as quantizer:
        fp32_pick, int8_pick = onnx_miou(model_path, pick), quantizer.miou([])
        say(f"mIoU on the {cut} pick images: FP32 {fp32_pick:.2f}%, INT8 {int8_pick:.2f}% "
            f"(drop {fp32_pick - int8_pick:.2f})")
        over_budget = max_miou_drop is not None and fp32_pick - int8_pick > max_miou_drop
        fallback: List[str] = []
        int8_pick_final = int8_pick
        if over_budget or report:
            named = onnx.load(str(model_path))
            ensure_node_names(named)  # the names quantized_layers and write_qdq give an unnamed graph's nodes
            layers = quantized_layers(model_path, logits_nodes(named))
            subset = pick.subset(sensitivity_images)
            with progress_bar("layer sensitivity", len(layers)) as advance:
                ranking = rank_layers(quantizer, layers, subset, advance)
            accuracy["sensitivity"] = [{"layer": name, "miou_with_layer_in_float": miou,
                                        "images": len(subset.batches)} for name, miou in ranking]
            if report:
                _print_sensitivity(ranking, quantizer.miou([], subset))
            if over_budget:
                with progress_bar("fit the budget", len(ranking)) as advance:
                    fallback, int8_pick_final, steps = fit_budget(quantizer, ranking, fp32_pick, max_miou_drop,
                                                                  advance)
                accuracy["fallback_steps"] = steps
                say(f"{len(fallback)} layer(s) kept in float: INT8 mIoU {int8_pick_final:.2f}% on the pick images "
                    f"(drop {fp32_pick - int8_pick_final:.2f}, budget {max_miou_drop})"
                    f"{'' if fp32_pick - int8_pick_final <= max_miou_drop else ' - still over with every layer tried'}")
        accuracy["pick_miou"] = {"fp32": fp32_pick, "int8_all_layers": int8_pick, "int8": int8_pick_final}
        fp32_miou = onnx_miou(model_path, held_out)
        int8_all = quantizer.miou([], held_out)
        int8_miou = quantizer.miou(fallback, held_out) if fallback else int8_all
    drop = round(fp32_miou - int8_miou, 4)
    accuracy.update(fp32_miou=fp32_miou, int8_miou_all_layers=int8_all, int8_miou=int8_miou, miou_drop=drop)
    verdict = ""
    if max_miou_drop is not None:
        accuracy["within_budget"] = drop <= max_miou_drop
        verdict = f", budget {max_miou_drop}: {'within' if drop <= max_miou_drop else 'OVER'}"
    say(f"mIoU on the {total - cut} report images: FP32 {fp32_miou:.2f}%, INT8 {int8_all:.2f}% with every layer"
        f"{f', {int8_miou:.2f}% with {len(fallback)} in float' if fallback else ''} (drop {drop:.2f}{verdict})")
    return fallback, accuracy


def _print_sensitivity(ranking, all_int8_miou: float) -> None:
    from rich.table import Table

    from edgeseg.console import out

    table = Table(title=f"Per-layer INT8 sensitivity (all layers INT8: {all_int8_miou:.2f}% mIoU)")
    for header in ("rank", "layer", "mIoU with this layer in float", "gain"):
        table.add_column(header, justify="left" if header == "layer" else "right")
    for rank, (name, miou) in enumerate(ranking, 1):
        table.add_row(str(rank), name, f"{miou:.2f}", f"{miou - all_int8_miou:+.2f}")
    out.print(table)
