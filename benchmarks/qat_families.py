"""Which models need QAT: INT8 mIoU of every registered family, post-training calibration against QAT.

For each of the 12 families: train it with `edgeseg train` on CamVid at 180x240 (a short
budget, from scratch: no ImageNet weights are cached here), export it, then in each
layout (Q/DQ on op inputs, TensorRT's; and ``--quantize-outputs``, ONNX Runtime's fast
one) calibrate it with the defaults and train it with `edgeseg qat`. Every model is
measured by the same ``onnx_miou`` on ONNX Runtime CPU.

Training never sees drive 0006R0 (CamVid's val shares its drive with 204 training frames,
so it flatters): the models train on the other 266 train frames (symbolic links, as
benchmarks/camvid/run.py --holdout-drive makes them), the targets are judged on
0006R0's 101 frames, and val is reported beside them. Also measured: the FP32 graph qat
trained with its rounding switched off, which says how much of QAT's result is the extra
training.

A family's row is written to results/qat_families.{json,md} as soon as it is measured, and
families already there are skipped (--redo FAMILY measures one again), so the table fills
over several sittings: the three heavy families need most of an hour each on 2 cores.

    ../.venv/bin/python qat_families.py                       # every family not measured yet
    ../.venv/bin/python qat_families.py --families lraspp-mobilenetv3-small --redo
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from common import CACHE, RESULTS, add_camvid_argument, machine, make_once, require_camvid, write_results
from edgeseg.quant.cpu_int8 import cpu_flags, saturating_kernels
from edgeseg.quantization_aware.api import LR_FRACTION
from edgeseg.training.loop import DEFAULT_LR

sys.path.insert(0, str(Path(__file__).resolve().parent / "camvid"))
from holdout import split_off_drive  # noqa: E402

# cheapest first (seconds per training batch of 8 at 180x240 on 2 cores: 0.35 ... 15)
FAMILIES = ("lraspp-mobilenetv3-small", "segformer-b0", "pspnet-mobilenetv3", "bisenetv2", "lraspp-mobilenetv3-large",
            "deeplabv3-mobilenetv3-large", "deeplabv3plus-mobilenetv3", "refinenet-lw-mobilenetv2", "enet", "unet",
            "fcn-resnet50", "deeplabv3-resnet50")
# the training budget: epochs over the 266 frames; the heavy families get what fits in a sitting
TRAIN_EPOCHS = {"unet": 2, "fcn-resnet50": 1, "deeplabv3-resnet50": 1}
DEFAULT_TRAIN_EPOCHS = 4
HOLDOUT = "0006R0"
INPUT_SIZE = "180x240"
LAYOUTS = {"inputs": False, "outputs": True}  # Q/DQ on op inputs (TensorRT) / also on conv outputs (ORT's fast)
# targets of the QAT issue
LOSS_THAT_NEEDS_QAT = 0.5
SATURATION = {True: "do not saturate", False: "saturate (VPMADDUBSW's int16 sums; edgeseg/quant/cpu_int8.py)"}
QAT_WITHIN = 0.3
QAT_LR = DEFAULT_LR["adamw"] * LR_FRACTION  # qat's default (1e-5); rows measured at 1e-4 say so


def measure_family(arch: str, data: Path, images: Path, evaldata: dict, work: Path, qat_epochs: int,
                   num: int, earlier: Optional[dict] = None) -> dict:
    """Train, export, calibrate and QAT one family; mIoU of each model on each eval set.

    ``earlier`` is the family's row from an earlier measurement (QAT at another learning rate): its trained,
    exported and calibrated models are reused, so their figures are kept rather than evaluated again, and its
    QAT figures are kept beside the new ones under ``earlier_qat``.
    """
    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar
    from edgeseg.quantization_aware.api import qat
    from edgeseg.training.api import train
    from edgeseg.training.loop import TrainConfig

    folder = work / arch
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, fp32 = folder / "model.pt", folder / "model.onnx"
    epochs = TRAIN_EPOCHS.get(arch, DEFAULT_TRAIN_EPOCHS)
    seconds = {}

    def timed(step: str, output: Path, make) -> None:
        seconds[step] = make_once(output, make)

    timed("train", checkpoint, lambda: train(arch, str(data), str(checkpoint), epochs=epochs, input_size=INPUT_SIZE,
                                             val_every=epochs, tensorboard=False))
    if not fp32.exists():
        export(str(checkpoint), str(fp32), data=str(data))
    models = {"fp32": fp32}
    for layout, outputs in LAYOUTS.items():
        ptq = folder / f"ptq-{layout}.int8.onnx"
        timed(f"calibrate {layout}", ptq,
              lambda: calibrate(str(fp32), str(images), str(ptq), num=num, quantize_outputs=outputs))
        out = folder / f"qat-{layout}-lr{QAT_LR:g}.int8.onnx"  # the name qat_lr_families.py gave its 1e-5 models
        timed(f"qat {layout}", out,
              lambda: qat(str(checkpoint), str(data), str(out), images=str(images), num=num, quantize_outputs=outputs,
                          training=TrainConfig(epochs=qat_epochs, batch_size=8, lr=QAT_LR, val_every=qat_epochs,
                                               tensorboard=False)))
        models[f"calibrate {layout}"] = ptq
        models[f"qat {layout}"] = out
        models[f"qat-trained fp32 {layout}"] = out.with_name(out.name.replace(".int8.onnx", ".onnx"))  # rounding off
    started = time.perf_counter()
    spec, _ = spec_from_sidecar(read_sidecar(fp32))  # each family's own pre-processing
    evalsets = {split: load_eval_set(str(folder), spec) for split, folder in evaldata.items()}
    kept = _figures_still_true(earlier, seconds)
    miou = {split: {name: kept[split][name] if name in kept.get(split, {}) else onnx_miou(path, evalset)
                    for name, path in models.items()}
            for split, evalset in evalsets.items()}
    intervals = {}  # empty: add_as_written scores every INT8 model as written again, per frame, for its intervals
    add_as_written(miou, intervals, models, evalsets)
    seconds["evaluate"] = round(time.perf_counter() - started, 1)
    row = {"train_epochs": epochs, "qat_epochs": qat_epochs, "qat_lr": QAT_LR, "miou": miou,
           "intervals": intervals, "seconds": seconds, "date": time.strftime("%Y-%m-%d")}
    if earlier is not None:
        # a reused model's time is the earlier sitting's; a QAT model qat_lr_families.py made has none here
        row["seconds"] = {k: earlier["seconds"].get(k) if v is None and not k.startswith("qat") else v
                          for k, v in seconds.items()}
        row["earlier_qat"] = {"lr": earlier.get("qat_lr", 1e-4), "date": earlier["date"],
                              "miou": {split: {k: v for k, v in figures.items() if k.startswith("qat")}
                                       for split, figures in earlier["miou"].items()}}
    return row


def _figures_still_true(earlier: Optional[dict], seconds: dict) -> dict:
    """The earlier row's FP32 and calibrate figures, where this sitting reused the models they measured
    (nothing was trained or calibrated again); its QAT figures belong to another learning rate."""
    if earlier is None or seconds["train"] is not None:
        return {}
    reused = {"fp32"} | {f"calibrate {layout}" for layout in LAYOUTS if seconds[f"calibrate {layout}"] is None}
    return {split: {k: v for k, v in figures.items() if k.split(",")[0] in reused}
            for split, figures in earlier["miou"].items()}


AS_WRITTEN = ("calibrate inputs", "qat inputs", "calibrate outputs", "qat outputs")
# CamVid's labelled frames are about a second apart along one drive: neighbours share most of the street, so
# the intervals draw runs of 10 frames (about the square root of 101, the usual block length), not single frames
INTERVAL_BLOCK = 10


def add_as_written(miou: dict, intervals: dict, models: dict, evalsets: dict) -> None:
    """The INT8 models once more with ONNX Runtime's graph optimisations off: their Q/DQ arithmetic as written,
    apart from the fused integer kernels (QLinearConv, QLinearMatMul, ...), which saturate on x86 CPUs without VNNI
    (quant/cpu_int8.py). Mostly the --quantize-outputs layout's; Q/DQ on inputs fuses only where a quantised op
    feeds another. Per layout, also QAT minus calibrate with its 95% paired bootstrap interval over the frames
    (``intervals[split][layout]``): where it holds 0, these frames cannot tell the two apart."""
    from edgeseg.metrics import mean_iou, paired_miou_interval
    from edgeseg.quant.sensitivity import onnx_frame_confusions

    for split, evalset in evalsets.items():
        for layout in LAYOUTS:
            names = (f"calibrate {layout}", f"qat {layout}")
            if layout in intervals.get(split, {}) and all(f"{n}, as written" in miou[split] for n in names):
                continue
            frames = {n: onnx_frame_confusions(models[n], evalset, fused=False) for n in names}
            for name in names:
                miou[split][f"{name}, as written"] = round(mean_iou(frames[name].sum(0)), 4)
            intervals.setdefault(split, {})[layout] = paired_miou_interval(*frames.values(), block=INTERVAL_BLOCK)


def complete_rows(document: dict, work: Path, evaldata: dict, pending=()) -> None:
    """Rows measured before the as-written figures or their intervals existed get them from the models still in
    ``work``; not the ``pending`` families, which this run measures again."""
    from edgeseg.quant.sensitivity import load_eval_set
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar

    for arch, row in document["families"].items():
        folder = work / arch
        lr = "" if row.get("qat_lr", 1e-4) == 1e-4 else f"-lr{row['qat_lr']:g}"  # 1e-4's models have no lr in name
        models = {**{f"calibrate {layout}": folder / f"ptq-{layout}.int8.onnx" for layout in LAYOUTS},
                  **{f"qat {layout}": folder / f"qat-{layout}{lr}.int8.onnx" for layout in LAYOUTS}}
        intervals = row.setdefault("intervals", {})
        done = all(layout in intervals.get(split, {}) for split in evaldata for layout in LAYOUTS)
        if done or arch in pending or not all(p.exists() for p in models.values()):
            continue
        print(f"{arch}: as written, with intervals", flush=True)
        spec, _ = spec_from_sidecar(read_sidecar(folder / "model.onnx"))
        add_as_written(row["miou"], intervals, models,
                       {split: load_eval_set(str(path), spec) for split, path in evaldata.items()})


def targets(row: dict, split: str) -> dict:
    """The issue's targets on one eval set, each with its margin (met where >= 0): per layout, QAT never below
    calibration, and within 0.3 of FP32 where calibration loses more than 0.5."""
    miou = row["miou"][split]
    margins = {}
    for layout in LAYOUTS:
        # judged as written: what this CPU's saturating kernels add is no quantisation loss
        suffix = ", as written" if f"calibrate {layout}, as written" in miou else ""
        calibrated, trained = miou[f"calibrate {layout}{suffix}"], miou[f"qat {layout}{suffix}"]
        margins[f"qat not below calibrate ({layout})"] = round(trained - calibrated, 2)
        if miou["fp32"] - calibrated > LOSS_THAT_NEEDS_QAT:
            margins[f"qat within {QAT_WITHIN} of fp32 ({layout})"] = round(QAT_WITHIN - (miou["fp32"] - trained), 2)
    return margins


def _chance(row: dict, split: str, target: str) -> str:
    """For a 'not below calibrate' miss: whether the frames tell QAT and calibrate apart at all."""
    layout = target.split("(")[-1].rstrip(")")
    interval = row.get("intervals", {}).get(split, {}).get(layout)
    if interval is None or "below calibrate" not in target:
        return ""
    told = "within chance" if interval["low"] <= 0 <= interval["high"] else "beyond chance"
    return f", {told} (95% interval {interval['low']:+.2f} to {interval['high']:+.2f})"


def _rate(lr: float) -> str:
    """1e-05 as 1e-5, as the docs write learning rates."""
    return f"{lr:.0e}".replace("e-0", "e-")


def _cell(miou: dict, name: str, base: float) -> str:
    """``value (change)``: the model as written, then through ORT's fused kernels on this CPU where measured."""
    written = miou.get(f"{name}, as written")
    if written is None:
        return f"{miou[name]:.2f} ({miou[name] - base:+.2f})"
    return f"{written:.2f} ({written - base:+.2f}); fused {miou[name]:.2f} ({miou[name] - base:+.2f})"


def markdown(document: dict) -> str:
    rows = document["families"]
    lines = ["# INT8 by family: post-training calibration against QAT (CamVid, 180x240, ONNX Runtime CPU)", "",
             f"Every family trained from scratch by `edgeseg train` on CamVid's train frames without drive {HOLDOUT} "
             f"(266), for the epochs in the table (a short budget: the models are far from converged, so read the "
             f"INT8 changes, not the FP32 figures). calibrate: its defaults (auto method, bias correction) on those "
             f"266 frames. qat: `edgeseg qat` from the same checkpoint, its defaults (learned activation scales, "
             f"distilled from the FP32 model + labels, AdamW at a hundredth of train's rate, {_rate(QAT_LR)}) for the "
             f"QAT epochs in the table; a row whose epochs say 'at 1e-4' was measured at the earlier default "
             f"(the last section puts the two beside each other where both were measured). Layouts: "
             f"**inputs** = Q/DQ on the quantised ops' inputs (TensorRT's), **outputs** = `--quantize-outputs` "
             f"(also on conv outputs, ONNX Runtime's fast layout). **qat FP32** is the graph qat trained, its rounding "
             f"switched off: QAT minus it is the rounding's cost after QAT, QAT minus FP32 includes the extra "
             f"training.", "",
             f"Each INT8 model is given twice. First **as written**: ONNX Runtime with its graph optimisations off, "
             f"so the Q/DQ model's own arithmetic runs (what a CPU with VNNI, ARM or TensorRT computes, up to "
             f"rounding); the targets are judged on it. Then **fused**: ONNX Runtime as it runs by default on this "
             f"machine ({document.get('machine', {}).get('cpu', '?')}, "
             f"{'with' if document.get('vnni') else 'without'} VNNI), whose fused integer kernels "
             f"{SATURATION[bool(document.get('vnni'))]}. Q/DQ on inputs fuses only where a quantised op feeds "
             f"another (QLinearConv, QLinearMatMul); with --quantize-outputs nearly every conv fuses.", ""]
    for split, title in ((HOLDOUT, f"drive {HOLDOUT} (101 frames no model trained on: the targets are judged here)"),
                         ("val", "val (101 frames of drive 0016E5, whose other 204 frames are in train)")):
        lines += [f"## mIoU % on {title}", "",
                  "| family | epochs (train / qat) | FP32 | inputs: calibrate | qat | qat FP32 | outputs: calibrate "
                  "| qat | qat FP32 | targets | date |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for arch in FAMILIES:
            row = rows.get(arch)
            if row is None:
                lines.append(f"| `{arch}` | not measured yet | | | | | | | | | |")
                continue
            m = row["miou"][split]
            base = m["fp32"]
            cells = [f"{base:.2f}"]
            for layout in LAYOUTS:
                cells += [_cell(m, f"calibrate {layout}", base), _cell(m, f"qat {layout}", base),
                          f"{m[f'qat-trained fp32 {layout}']:.2f}"]
            missed = [f"{name} by {-margin:.2f}{_chance(row, split, name)}"
                      for name, margin in targets(row, split).items() if margin < 0]
            verdict = "met" if not missed else "missed: " + "; ".join(missed)
            lr = row.get("qat_lr", 1e-4)
            at = "" if lr == QAT_LR else f" at {_rate(lr)}"
            lines.append(f"| `{arch}` | {row['train_epochs']} / {row['qat_epochs']}{at} | " + " | ".join(cells)
                         + f" | {verdict} | {row['date']} |")
        lines.append("")
    lines += interval_section(rows)
    lines += earlier_lr_section(rows)
    lines += ["Seconds per family (train, calibrate and qat per layout, evaluating every model on both sets; "
              "'earlier sitting': made before the run was restarted, its time not kept):", ""]
    for arch, row in rows.items():
        lines.append(f"- `{arch}`: " + ", ".join(f"{k} {'earlier sitting' if v is None else v}"
                                                 for k, v in row["seconds"].items()))
    lines.append("")
    return "\n".join(lines)


def interval_section(rows: dict) -> list:
    """QAT minus calibrate with its paired block-bootstrap interval, per family, layout and eval set."""
    measured = {arch: row["intervals"] for arch in FAMILIES if (row := rows.get(arch)) and row.get("intervals")}
    if not measured:
        return []
    lines = [f"## QAT minus calibrate, as written, and what the frames tell apart", "",
             f"Each cell: QAT's mIoU minus calibrate's, then its 95% paired bootstrap interval (both models scored "
             f"on the same redrawn frames, in runs of {INTERVAL_BLOCK} consecutive frames, since neighbouring frames "
             f"of a drive share most of the street; edgeseg.metrics.paired_miou_interval). An interval that holds 0: "
             f"these 101 frames cannot tell QAT and calibrate apart.", "",
             f"| family | layout | drive {HOLDOUT} | val |", "|---|---|---|---|"]
    for arch, intervals in measured.items():
        for layout in LAYOUTS:
            cells = [(f"{i['difference']:+.2f} ({i['low']:+.2f} to {i['high']:+.2f})" if (i := intervals.get(split, {})
                      .get(layout)) else "") for split in (HOLDOUT, "val")]
            lines.append(f"| `{arch}` | {layout} | " + " | ".join(cells) + " |")
    return lines + [""]


def earlier_lr_section(rows: dict) -> list:
    """QAT at the earlier default learning rate beside QAT at the current one, where a family has both."""
    compared = {arch: row for arch, row in rows.items() if "earlier_qat" in row}
    if not compared:
        return []
    lines = [f"## QAT at the earlier default 1e-4 against {_rate(QAT_LR)} (as written, change from calibrate)", "",
             "Same checkpoint, calibrated start, seed and epochs; only the learning rate differs. **its FP32**: the "
             "graph QAT trained, rounding off (where it falls as far as QAT, the training moved the model, not the "
             "rounding).", "",
             f"| family | layout | {HOLDOUT}: calibrate | qat 1e-4 | its FP32 | qat {_rate(QAT_LR)} | its FP32 "
             f"| val: calibrate | qat 1e-4 | qat {_rate(QAT_LR)} |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arch, row in compared.items():
        for layout in LAYOUTS:
            cells = []
            for split in (HOLDOUT, "val"):
                now, then = row["miou"][split], row["earlier_qat"]["miou"][split]
                calibrated = now[f"calibrate {layout}, as written"]
                cells.append(f"{calibrated:.2f}")
                for figures in (then, now):
                    cells.append(f"{figures[f'qat {layout}, as written'] - calibrated:+.2f}")
                    if split == HOLDOUT:
                        cells.append(f"{figures[f'qat-trained fp32 {layout}'] - calibrated:+.2f}")
            lines.append(f"| `{arch}` | {layout} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--redo", action="store_true", help="Measure the given families again.")
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--num", type=int, default=500, help="Calibration images (calibrate's default).")
    parser.add_argument("--work", default=str(CACHE / "qat-families"))
    args = parser.parse_args()

    data = require_camvid(args.data)
    work = Path(args.work)
    splits = split_off_drive(data, HOLDOUT, work / "splits")
    images = splits["train"] / "train" / "images"
    evaldata = {HOLDOUT: splits["holdout"], "val": data}
    results = RESULTS / "qat_families.json"
    document = json.loads(results.read_text()) if results.exists() else {"families": {}}
    for number, arch in enumerate(args.families):
        earlier = document["families"].get(arch)
        if earlier is not None and earlier.get("qat_lr", 1e-4) == QAT_LR and not args.redo:
            print(f"{arch}: measured on {earlier['date']}; skipped (--redo measures it again)")
            continue
        print(f"== {arch}", flush=True)
        if earlier is not None and earlier.get("qat_lr", 1e-4) == QAT_LR:
            earlier = None  # --redo: measure everything again
        document["families"][arch] = measure_family(arch, splits["train"], images, evaldata, work, args.qat_epochs,
                                                    args.num, earlier)
        document["machine"] = machine()
        document["vnni"] = not saturating_kernels(cpu_flags())
        complete_rows(document, work, evaldata, pending=args.families[number + 1:])
        write_results("qat_families", document, markdown(document))
    document.setdefault("machine", machine())
    document["vnni"] = not saturating_kernels(cpu_flags())
    complete_rows(document, work, evaldata)  # rows measured before the as-written figures, where their models remain
    write_results("qat_families", document, markdown(document))


if __name__ == "__main__":
    main()
