"""INT8 accuracy on CamVid val: edgeseg's calibration methods against ONNX Runtime's and NNCF's.

One run, the same calibration images (CamVid train), mIoU at the labels' native 360x480
on the whole val split, for two FP32 models: LR-ASPP MobileNetV3-Large trained on CamVid
by `edgeseg train` (cached under benchmarks/cache/), and the harder pruned student of the
committed CamVid run (models/camvid/pruned.onnx). The peers: ONNX Runtime's quantize_static
with its defaults and at its best for these models (Q/DQ on op inputs only, Percentile),
and NNCF's defaults. Targets (issue 4): edgeseg's default within 0.5 mIoU of FP32 and not
below any peer row; with --max-miou-drop 0.3 the drop is at most 0.3 (on the val images
that picking the float layers never saw).

Run: python benchmarks/int8_accuracy.py [--data ../shared/data/camvid]
     python benchmarks/int8_accuracy.py --models pruned --rows fp32 ort-best  # re-run some rows, keep the rest
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


GROUPS = ("fp32", "single", "default", "outputs", "ort-defaults", "ort-best", "nncf", "budget")
ORT_DEFAULTS = "ONNX Runtime quantize_static (MinMax, QDQ, per-channel)"
ORT_BEST = ("ONNX Runtime quantize_static at its best here (Percentile 99.999, symmetric, Q/DQ on op inputs only, "
            "per-channel)")


def ort_best(model: Path, inputs: list, out: Path) -> None:
    """ONNX Runtime's quantize_static with the settings that suit this model, through its own options.

    Q/DQ on op inputs only (OpTypesToExcludeOutputQuantization names every op type in the
    graph, so no op output is rounded before the next op's input is), Percentile calibration,
    symmetric activations, per-channel weights. Its calibrator keeps every intermediate
    tensor of every image in memory (about 51 MB an image for the pruned student, 19 GB for
    367 images), so it is fed one image at a time through CalibStridedMinMax, its own option
    for that: the histograms are merged across calls.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items, self.start, self.end = [{"input": x} for x in inputs], 0, len(inputs)

        def __len__(self):
            return len(self.items)

        def set_range(self, start_index, end_index):
            self.start, self.end = start_index, end_index

        def get_next(self):
            if self.start >= self.end:
                return None
            self.start += 1
            return self.items[self.start - 1]

    op_types = sorted({node.op_type for node in onnx.load(str(model)).graph.node})
    quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.Percentile,
                    extra_options={"OpTypesToExcludeOutputQuantization": op_types, "ActivationSymmetric": True,
                                   "CalibTensorRangeSymmetric": True, "CalibPercentile": 99.999,
                                   "CalibStridedMinMax": 1})


def measure(model: Path, data: Path, num: int, work: Path, groups=GROUPS) -> dict:
    """mIoU of FP32, every edgeseg variant and the peers for one FP32 ONNX model, plus the budget run.

    ``groups`` picks which rows to measure (GROUPS); the others are left out of the result.
    """
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
    images = str(data / "train" / "images")
    rows, result = {}, {"model": model.name, "calibration_images": len(inputs), "val_images": len(evalset.batches)}
    if "fp32" in groups:
        rows["FP32"] = onnx_miou(model, evalset)

    if "single" in groups:  # edgeseg: one histogram pass, every single method's thresholds (no bias correction)
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

    if "default" in groups:  # edgeseg's default through the public function
        picked = calibrate(str(model), images, str(work / "default.int8.onnx"), num=num)["quantization"]
        rows[DEFAULT] = onnx_miou(work / "default.int8.onnx", evalset)
        result["auto"] = {"selected_method": picked["selected_method"],
                          "argmax_agreement_percent": picked["argmax_agreement_percent"]}
    if "outputs" in groups:  # the same with ONNX Runtime's Q/DQ placement
        calibrate(str(model), images, str(work / "outputs.int8.onnx"), num=num, quantize_outputs=True)
        rows["edgeseg default, Q/DQ on conv outputs too (--quantize-outputs)"] = onnx_miou(
            work / "outputs.int8.onnx", evalset)

    if "ort-defaults" in groups:  # peer 1: quantize_static with its defaults (MinMax, QDQ), per-channel weights
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter([{"input": x} for x in inputs])

            def get_next(self):
                return next(self.items, None)

        ort_path = work / "onnxruntime-quantize-static.onnx"
        quantize_static(str(model), str(ort_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
        rows[ORT_DEFAULTS] = onnx_miou(ort_path, evalset)
    if "ort-best" in groups:  # peer 1 at its best for this model
        ort_best(model, inputs, work / "onnxruntime-best.onnx")
        rows[ORT_BEST] = onnx_miou(work / "onnxruntime-best.onnx", evalset)

    if "nncf" in groups:  # peer 2: NNCF post-training quantization of the ONNX model, if NNCF is installed
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

    if "budget" in groups:  # the accuracy budget through the public function: layers picked on val images
        # 1-51, the drop reported on 52-101 (calibrate's own split); the table row is the whole val split
        budget = calibrate(str(model), images, str(work / "budget.int8.onnx"), num=num, data=str(data),
                           max_miou_drop=0.3)
        accuracy = budget["accuracy"]
        rows["edgeseg default with --max-miou-drop 0.3"] = onnx_miou(work / "budget.int8.onnx", evalset)
        result["budget"] = {"max_miou_drop": 0.3, "fallback_layers": budget["quantization"]["fallback_layers"],
                            "split": accuracy["split"], "pick_miou": accuracy["pick_miou"],
                            "drop_on_report_images": accuracy["miou_drop"]}
    result["miou"] = rows
    return result


def targets(result: dict) -> dict:
    """The issue-4 targets, from whichever rows the result has (re-run or kept from an earlier run)."""
    rows = result["miou"]
    fp32, default = rows["FP32"], rows[DEFAULT]
    peers = {k: v for k, v in rows.items() if v is not None and (k.startswith("ONNX Runtime") or k.startswith("NNCF"))}
    found = {"default_within_0.5_of_fp32": fp32 - default <= 0.5,
             "default_not_below_peers": all(default >= v for v in peers.values())}
    budget = result.get("budget", {})
    drop = budget.get("drop_on_report_images", budget.get("drop"))
    found["budget_drop_at_most_0.3" + ("_on_report_images" if "drop_on_report_images" in budget else "")] = (
        drop is not None and drop <= 0.3)
    return found


def merge(earlier: dict, new: dict, today: str, earlier_date: str) -> dict:
    """``earlier`` with the rows of ``new`` replacing or joining its own; ``run`` says which row is from when."""
    run = dict(earlier.get("run") or {name: earlier_date for name in earlier["miou"]})
    merged = dict(earlier, **{k: v for k, v in new.items() if k != "miou"})
    merged["miou"] = dict(earlier["miou"])
    for name, value in new["miou"].items():
        merged["miou"][name] = value
        run[name] = today
    merged["miou"] = dict(sorted(merged["miou"].items(), key=lambda item: _row_rank(item[0])))  # stable
    merged["run"] = run
    merged["targets"] = targets(merged)
    return merged


def _row_rank(name: str) -> int:
    """Where a row stands in the table: the order a full run writes them in."""
    order = ("FP32", "edgeseg minmax", "edgeseg percentile", "edgeseg entropy", "edgeseg mse", DEFAULT + "",
             "edgeseg default, Q/DQ", ORT_DEFAULTS, ORT_BEST, "NNCF", "edgeseg default with --max-miou-drop")
    return next((rank for rank, prefix in enumerate(order) if name.startswith(prefix)), len(order))


def table(title: str, result: dict) -> list:
    fp32 = result["miou"]["FP32"]
    run = result.get("run")
    lines = [f"## {title}", ""]
    if run:
        lines += ["| model | mIoU % | change vs FP32 | run |", "|---|---:|---:|---|"]
    else:
        lines += ["| model | mIoU % | change vs FP32 |", "|---|---:|---:|"]
    for name, value in result["miou"].items():
        cells = [name, "-" if value is None else f"{value:.2f}", "-" if value is None else f"{value - fp32:+.2f}"]
        if run:
            cells.append(run.get(name, "-"))
        lines.append("| " + " | ".join(cells) + " |")
    auto = result.get("auto")
    if auto:
        lines += ["", f"The default's `--method auto` picked {auto['selected_method']} (argmax agreement with FP32 on "
                      f"50 calibration images: " + ", ".join(f"{m} {a:.2f}%" for m, a in
                                                             auto["argmax_agreement_percent"].items()) + ")."]
    budget = result.get("budget")
    if budget and "split" in budget:
        pick, report = budget["split"]["pick"], budget["split"]["report"]
        lines += ["", f"Budget run: {len(budget['fallback_layers'])} layer(s) kept in float, picked on val images "
                      f"{pick['images']}; drop {budget['drop_on_report_images']:.2f} on val images {report['images']}, "
                      f"which picking never saw (the table row is the same model on the whole val split)."]
    elif budget:
        lines += ["", f"Budget run: {len(budget['fallback_layers'])} layer(s) kept in float, drop {budget['drop']:.2f} "
                      f"(picked and measured on the whole val split)."]
    lines += ["", "Targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in result["targets"].items()),
              ""]
    return lines


MODELS = ("student", "pruned")


def render(document: dict) -> str:
    """The results page from the results document: every row, and for re-run rows the date they were re-run."""
    lines = ["# INT8 accuracy on CamVid val (101 images, 360x480 labels)", "",
             f"Calibration: {document[next(n for n in MODELS if n in document)]['calibration_images']} CamVid train "
             f"images; ONNX Runtime CPU. Q/DQ on op inputs only unless said otherwise. Full run: "
             f"{document['date']}{_versions(document)}.", ""]
    for rerun in document.get("reruns", []):
        lines += [f"Re-run on {rerun['date']}{_versions(rerun)}: the rows {', '.join(rerun['rows'])} of "
                  f"{' and '.join(rerun['models'])} (`--models {' '.join(rerun['models'])} --rows "
                  f"{' '.join(rerun['rows'])}`, {rerun['cpu_minutes']} CPU minutes); every other row is from the "
                  f"full run. In a table with a `run` column, that column gives each row's date; a table without "
                  f"one was not re-run.", ""]
    if "student" in document:
        lines += table(f"The benchmark student: LR-ASPP MobileNetV3-Large trained by `edgeseg train` "
                       f"({RECIPE['epochs']} epochs at {RECIPE['input_size']})", document["student"])
    if "pruned" in document:
        lines += table("A harder case: models/camvid/pruned.onnx (the CamVid benchmark's pruned student)",
                       document["pruned"])
    return "\n".join(lines)


def _versions(record: dict) -> str:
    versions = record.get("versions")
    if not versions:
        return " (library versions not recorded)"
    return " (" + ", ".join(f"{name} {version}" for name, version in versions.items()) + ")"


def versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}


def main() -> None:
    import json
    import resource

    from common import RESULTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--num", type=int, default=500, help="calibration images (all 367 train images by default)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="which FP32 models to run (the student needs benchmarks/cache, ~25 CPU min to train)")
    parser.add_argument("--rows", nargs="+", choices=GROUPS, default=list(GROUPS),
                        help="which rows to measure; with fewer than all, the other rows (and models) are kept from "
                             "the committed results and the table says which row is from which run")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the committed .json")
    args = parser.parse_args()
    committed = RESULTS / "int8_accuracy.json"
    if args.render:
        document = json.loads(committed.read_text())
        write_results("int8_accuracy", document, render(document))
        return
    data = require_camvid(args.data)
    partial = set(args.rows) != set(GROUPS) or set(args.models) != set(MODELS)
    today = time.strftime("%Y-%m-%d")

    started = time.perf_counter()
    earlier = json.loads(committed.read_text()) if partial else {}
    earlier_date = earlier.get("date", "2026-11-23")  # the date of the run before dates were recorded
    document = {"machine": machine(), "recipe": RECIPE, "date": earlier_date if partial else today}
    if not partial:
        document["versions"] = versions()
    elif "versions" in earlier:
        document["versions"] = earlier["versions"]
    for name in MODELS:
        if name in args.models:
            if name == "student":
                model, work = fp32_model(data), CACHE / "int8" / "student"
            elif PRUNED_CAMVID.exists():
                model, work = PRUNED_CAMVID, CACHE / "int8" / "pruned"
            else:
                continue
            result = measure(model, data, args.num, work, args.rows)
            document[name] = merge(earlier[name], result, today, earlier_date) if partial and name in earlier else \
                dict(result, targets=targets(result))
        elif name in earlier:
            document[name] = earlier[name]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timing = {"minutes": round((time.perf_counter() - started) / 60, 1),
              "cpu_minutes": round((usage.ru_utime + usage.ru_stime) / 60, 1)}
    if partial:
        document["minutes"] = earlier.get("minutes")
        document["reruns"] = earlier.get("reruns", []) + [dict(date=today, models=args.models, rows=args.rows,
                                                               versions=versions(), **timing)]
    else:
        document.update(timing)
    write_results("int8_accuracy", document, render(document))


if __name__ == "__main__":
    main()
