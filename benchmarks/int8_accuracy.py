"""INT8 accuracy on CamVid val: edgeseg's calibration methods against ONNX Runtime's and NNCF's defaults.

One run, the same calibration images (CamVid train), mIoU at the labels' native 360x480
on the whole val split, for two FP32 models: LR-ASPP MobileNetV3-Large trained on CamVid
by `edgeseg train` (cached under benchmarks/cache/), and the harder pruned student of the
committed CamVid run (models/camvid/pruned.onnx). Targets (issue 4): edgeseg's default
within 0.5 mIoU of FP32 and not below either peer; with --max-miou-drop 0.3 the drop
is at most 0.3.

Run: python benchmarks/int8_accuracy.py [--data ../shared/data/camvid]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import (CACHE, STUDENT_RECIPE as RECIPE, add_camvid_argument, camvid_student, machine, require_camvid,
                    write_results)


def fp32_model(data: Path) -> Path:
    """The CamVid student as ONNX, trained and exported by edgeseg once and then reused."""
    from edgeseg.exporting.api import export

    checkpoint = camvid_student(data)
    onnx_path = checkpoint.with_suffix(".onnx")
    if not onnx_path.exists():
        export(str(checkpoint), str(onnx_path), data=str(data))
    return onnx_path


PRUNED_CAMVID = Path(__file__).resolve().parents[1] / "models" / "camvid" / "pruned.onnx"
DEFAULT = "edgeseg default (auto + bias correction)"


def measure(model: Path, data: Path, num: int, work: Path) -> dict:
    """mIoU of FP32, every edgeseg variant and both peers for one FP32 ONNX model, plus the budget run."""
    from edgeseg.data.images import read_image
    from edgeseg.quant.api import calibrate, calibration_images
    from edgeseg.quant.collect import collect_histograms
    from edgeseg.quant.qdq import write_qdq
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.runtime.preprocess import preprocess
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar

    spec, _ = spec_from_sidecar(read_sidecar(model))
    files = calibration_images(data / "train" / "images", num, seed=0)
    inputs = [preprocess(read_image(f), spec) for f in files]
    evalset = load_eval_set(str(data), spec)
    work.mkdir(parents=True, exist_ok=True)
    rows = {"FP32": onnx_miou(model, evalset)}

    # edgeseg: one histogram pass, every single method's thresholds from it (no bias correction)
    histograms = collect_histograms(model, iter(inputs))
    for method in ("minmax", "percentile", "entropy", "mse"):
        for symmetric in (True, False):
            if not symmetric and method != "mse":
                continue  # asymmetric is compared on one method only
            ranges = {}
            for name, h in histograms.items():
                amax = h.amax(method, 99.99)
                ranges[name] = (-amax, amax) if symmetric else (max(h.min, -amax), min(h.max, amax))
            path = work / f"edgeseg-{method}-{'sym' if symmetric else 'asym'}.onnx"
            write_qdq(model, path, ranges, symmetric=symmetric)
            label = f"edgeseg {method}, no bias correction"
            rows[label + ("" if symmetric else ", asymmetric activations")] = onnx_miou(path, evalset)

    # edgeseg's default through the public function, then the same with ONNX Runtime's Q/DQ placement
    images = str(data / "train" / "images")
    picked = calibrate(str(model), images, str(work / "default.int8.onnx"), num=num)["quantization"]
    rows[DEFAULT] = onnx_miou(work / "default.int8.onnx", evalset)
    calibrate(str(model), images, str(work / "outputs.int8.onnx"), num=num, quantize_outputs=True)
    rows["edgeseg default, Q/DQ on conv outputs too (--quantize-outputs)"] = onnx_miou(
        work / "outputs.int8.onnx", evalset)

    # peer 1: ONNX Runtime's quantize_static with its defaults (MinMax, QDQ) and per-channel weights
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": x} for x in inputs])

        def get_next(self):
            return next(self.items, None)

    ort_path = work / "onnxruntime-quantize-static.onnx"
    quantize_static(str(model), str(ort_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    rows["ONNX Runtime quantize_static (MinMax, QDQ, per-channel)"] = onnx_miou(ort_path, evalset)

    # peer 2: NNCF post-training quantization of the ONNX model, if NNCF is installed
    try:
        import nncf
        import onnx

        nncf_model = nncf.quantize(onnx.load(str(model)), nncf.Dataset(inputs, lambda x: {"input": x}),
                                   subset_size=len(inputs))
        nncf_path = work / "nncf.onnx"
        onnx.save(nncf_model, str(nncf_path))
        rows[f"NNCF {nncf.__version__} quantize (defaults)"] = onnx_miou(nncf_path, evalset)
    except ImportError:
        rows["NNCF"] = None

    # the accuracy budget through the public function
    budget = calibrate(str(model), images, str(work / "budget.int8.onnx"), num=num, data=str(data),
                       max_miou_drop=0.3)
    accuracy = budget["accuracy"]
    rows["edgeseg default with --max-miou-drop 0.3"] = accuracy["int8_miou"]

    fp32, default = rows["FP32"], rows[DEFAULT]
    peers = [v for k, v in rows.items() if v is not None and (k.startswith("ONNX Runtime") or k.startswith("NNCF"))]
    return {"model": model.name, "calibration_images": len(inputs), "val_images": len(evalset.batches),
            "miou": rows, "auto": {"selected_method": picked["selected_method"],
                                   "argmax_agreement_percent": picked["argmax_agreement_percent"]},
            "budget": {"max_miou_drop": 0.3, "fallback_layers": budget["quantization"]["fallback_layers"],
                       "drop": accuracy["miou_drop"]},
            "targets": {"default_within_0.5_of_fp32": fp32 - default <= 0.5,
                        "default_not_below_peers": all(default >= p for p in peers),
                        "budget_drop_at_most_0.3": accuracy["miou_drop"] <= 0.3}}


def table(title: str, result: dict) -> list:
    fp32 = result["miou"]["FP32"]
    lines = [f"## {title}", "", "| model | mIoU % | change vs FP32 |", "|---|---:|---:|"]
    for name, value in result["miou"].items():
        lines.append(f"| {name} | {'-' if value is None else f'{value:.2f}'} | "
                     f"{'-' if value is None else f'{value - fp32:+.2f}'} |")
    budget = result["budget"]
    lines += ["", f"Budget run: {len(budget['fallback_layers'])} layer(s) kept in float, drop {budget['drop']:.2f}.",
              "", "Targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in result["targets"].items()), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--num", type=int, default=500, help="calibration images (all 367 train images by default)")
    args = parser.parse_args()
    data = require_camvid(args.data)

    started = time.perf_counter()
    student = measure(fp32_model(data), data, args.num, CACHE / "int8" / "student")
    document = {"machine": machine(), "recipe": RECIPE, "student": student}
    lines = ["# INT8 accuracy on CamVid val (101 images, 360x480 labels)", "",
             f"Calibration: {student['calibration_images']} CamVid train images; ONNX Runtime CPU; "
             f"{time.strftime('%Y-%m-%d')}. Q/DQ on op inputs only unless said otherwise.", ""]
    lines += table(f"The benchmark student: LR-ASPP MobileNetV3-Large trained by `edgeseg train` "
                   f"({RECIPE['epochs']} epochs at {RECIPE['input_size']})", student)
    if PRUNED_CAMVID.exists():  # the harder case: the 30%-pruned student of the committed CamVid run
        pruned = measure(PRUNED_CAMVID, data, args.num, CACHE / "int8" / "pruned")
        document["pruned"] = pruned
        lines += table("A harder case: models/camvid/pruned.onnx (the CamVid benchmark's pruned student)", pruned)
    document["minutes"] = round((time.perf_counter() - started) / 60, 1)
    write_results("int8_accuracy", document, "\n".join(lines))


if __name__ == "__main__":
    main()
