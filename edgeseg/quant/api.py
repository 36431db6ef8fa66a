"""``edgeseg calibrate``: activation ranges from real images -> Q/DQ ONNX + TensorRT cache + ranges JSON."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edgeseg.console import progress_bar, say
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
from edgeseg.sidecar import read_sidecar, spec_from_sidecar, write_sidecar

METHODS = ("minmax", "percentile", "entropy", "mse")


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


def calibrate(model: str, images: str, out: Optional[str] = None, *, method: str = "mse",
              percentile: float = 99.99, num: int = 500, seed: int = 0, symmetric: bool = True,
              bias_correction: bool = True,
              data: Optional[str] = None, max_miou_drop: Optional[float] = None, report: bool = False,
              sensitivity_images: int = 50, max_images: Optional[int] = None, device: str = "cpu") -> dict:
    """Calibrate the FP32 ONNX ``model`` on ``images``; write ``<stem>.int8.onnx``, ``.calib.cache`` and ``.ranges.json``.

    Images are pre-processed exactly as at inference, from the model's sidecar. With
    labelled ``data``, INT8 is evaluated against FP32; with ``max_miou_drop`` the most
    sensitive layers are kept in float until the drop is within budget; ``report``
    prints the per-layer sensitivity table.

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
    meta = read_sidecar(model_path, required=True)
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

    files = calibration_images(images, num, seed)
    say(f"Calibrating {model_path.name} on {len(files)} images ({method}"
        f"{f' {percentile}' if method == 'percentile' else ''}, {'symmetric' if symmetric else 'asymmetric'})")
    batches = (preprocess(read_image(f), spec) for f in files)
    with progress_bar("collect ranges", len(files)) as advance:
        channel_means: Dict[str, np.ndarray] = {}
        histograms = collect_histograms(model_path, batches, advance, device=device, channel_means=channel_means)
    base_model = model_path
    corrected: List[str] = []
    if bias_correction:
        base_model, corrected = _bias_corrected(model_path, channel_means)
    amax: Dict[str, float] = {name: h.amax(method, percentile) for name, h in histograms.items()}
    ranges = {}
    for name, h in histograms.items():
        if symmetric:
            ranges[name] = (-amax[name], amax[name])
        else:  # asymmetric: the observed interval, clipped by the method's threshold
            ranges[name] = (max(h.min, -amax[name]), min(h.max, amax[name]))
    accuracy = None
    fallback: List[str] = []
    if data:
        fallback, accuracy = _accuracy_budget(model_path, base_model, ranges, symmetric, data, spec, max_miou_drop,
                                              report, sensitivity_images, max_images)
    with atomic_path(out_path) as tmp:
        float_nodes = write_qdq(base_model, tmp, ranges, symmetric=symmetric, nodes_to_exclude=fallback)
    write_text_atomic(cache_path, format_cache(amax, method))
    settings = {"method": method, "percentile": percentile if method == "percentile" else None,
                "symmetric": symmetric, "bias_correction": bool(bias_correction), "bias_corrected_layers": len(corrected), "num_images": len(files), "seed": seed, "images": str(images)}
    # which images the seed picked, so a calibration can be reproduced or audited image by image
    folder = Path(os.path.commonpath([str(Path(f).parent) for f in files]))
    image_files = [str(Path(f).relative_to(folder)) for f in files]
    write_json_atomic(ranges_path, {**settings, "image_files": image_files, "tensors": {
        name: {"amax": amax[name], "min": histograms[name].min, "max": histograms[name].max,
               "low": ranges[name][0], "high": ranges[name][1]} for name in histograms}})
    say(f"Wrote {out_path.name}, {cache_path.name} and {ranges_path.name}; {len(float_nodes)} node(s) kept in float")
    return write_sidecar(out_path, "onnx", input_spec=spec, dataset=info, parent=model_path, stage="calibrate",
                         model=meta.get("model"), precision="int8", onnx=meta.get("onnx"),
                         quantization=dict(settings, format="qdq", weights="per-channel symmetric int8",
                                           float_nodes=float_nodes, fallback_layers=fallback,
                                           calibration_cache=cache_path.name, ranges=ranges_path.name),
                         accuracy=accuracy)


def _bias_corrected(model_path: Path, channel_means) -> tuple:
    """A temporary FP32 copy of the model whose conv biases absorb the INT8 weight-rounding shift."""
    import tempfile

    import onnx

    from edgeseg.quant.bias_correction import correct_biases
    from edgeseg.quant.qdq import ensure_node_names, logits_nodes

    model = onnx.load(str(model_path))
    ensure_node_names(model)  # same names write_qdq gives, so exclusion lists keep matching
    corrected = correct_biases(model, channel_means, skip=logits_nodes(model))
    path = Path(tempfile.mkdtemp(prefix="edgeseg-bias-")) / model_path.name
    onnx.save(model, str(path))
    return path, corrected


def _accuracy_budget(model_path, base_model, ranges, symmetric, data, spec, max_miou_drop, report,
                     sensitivity_images, max_images):
    """Measure INT8 against FP32; rank layers and fall back to float when over budget (or asked to report)."""
    from edgeseg.quant.qdq import logits_nodes
    from edgeseg.quant.sensitivity import Quantizer, fit_budget, load_eval_set, onnx_miou, quantized_layers, rank_layers

    import onnx

    evalset = load_eval_set(data, spec, max_images)
    fp32_miou = onnx_miou(model_path, evalset)
    quantizer = Quantizer(base_model, ranges, symmetric, evalset)
    int8_miou = quantizer.miou([])
    say(f"mIoU on {len(evalset.batches)} images: FP32 {fp32_miou:.2f}%, INT8 {int8_miou:.2f}% "
        f"(drop {fp32_miou - int8_miou:.2f})")
    accuracy = {"data": str(data), "num_images": len(evalset.batches), "fp32_miou": fp32_miou,
                "int8_miou_all_layers": int8_miou, "int8_miou": int8_miou,
                "miou_drop": round(fp32_miou - int8_miou, 4), "max_miou_drop": max_miou_drop}
    over_budget = max_miou_drop is not None and fp32_miou - int8_miou > max_miou_drop
    if not (over_budget or report):
        return [], accuracy
    layers = quantized_layers(base_model, logits_nodes(onnx.load(str(model_path))))
    subset = evalset.subset(sensitivity_images)
    with progress_bar("layer sensitivity", len(layers)) as advance:
        ranking = rank_layers(quantizer, layers, subset, advance)
    accuracy["sensitivity"] = [{"layer": name, "miou_with_layer_in_float": miou,
                                "images": len(subset.batches)} for name, miou in ranking]
    if report:
        _print_sensitivity(ranking, quantizer.miou([], subset))
    fallback: List[str] = []
    if over_budget:
        with progress_bar("fit the budget", len(ranking)) as advance:
            fallback, int8_miou, steps = fit_budget(quantizer, ranking, fp32_miou, max_miou_drop, advance)
        accuracy.update(int8_miou=int8_miou, miou_drop=round(fp32_miou - int8_miou, 4), fallback_steps=steps)
        within = fp32_miou - int8_miou <= max_miou_drop
        say(f"{len(fallback)} layer(s) kept in float: INT8 mIoU {int8_miou:.2f}% (drop {fp32_miou - int8_miou:.2f}, "
            f"budget {max_miou_drop}){'' if within else ' - still over budget with every layer tried'}")
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
