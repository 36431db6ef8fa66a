"""QAT against post-training calibration: val mIoU of FP32, calibrate's Q/DQ models and qat's, on ONNX Runtime CPU.

The model is models/camvid/pruned.pt (the CamVid benchmark's pruned student, 180x240) on
CamVid, or with ``--synthetic`` a tiny U-Net trained here on the synthetic scenes. Rows:
FP32; calibrate's default (auto + bias correction) with Q/DQ on op inputs (TensorRT's
layout) and with ``--quantize-outputs`` (where post-training calibration loses most,
benchmarks/results/int8_accuracy.md); qat from the same model with each layout; and the
FP32 graph qat trained (its INT8 rounding switched off), which says how much of a gain is
the extra training rather than the quantisation-aware part. Every row is measured by the
same ``onnx_miou`` on the same pre-processed val images.

    ../.venv/bin/python qat_vs_ptq.py --epochs 2            # CamVid (shared/data/camvid)
    ../.venv/bin/python qat_vs_ptq.py --synthetic --epochs 2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import RESULTS, machine, make_once, write_results
from edgeseg.quant.cpu_int8 import cpu_flags, saturating_kernels

ROOT = Path(__file__).resolve().parents[1]


def _tiny_model(work: Path) -> tuple:
    """(checkpoint, data): a small U-Net trained 8 epochs on the synthetic scenes (96x128)."""
    from edgeseg.data.synthetic import default_synthetic_root
    from edgeseg.training.api import train

    data = default_synthetic_root()
    model = work / "unet.pt"
    if not model.exists():
        train("unet", "synthetic", str(model), epochs=8, batch_size=8, arch_args={"base_channels": 8},
              tensorboard=False, val_every=8)
    return model, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="A tiny U-Net on the synthetic scenes.")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--model", default=str(ROOT / "models" / "camvid" / "pruned.pt"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num", type=int, default=100, help="Calibration images.")
    parser.add_argument("--work", default="/tmp/edgeseg-qat-vs-ptq")
    parser.add_argument("--reuse", action="store_true",
                        help="Measure the models a run with the same options left in --work again, without making "
                             "them again (their seconds come from that run's results).")
    args = parser.parse_args()

    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.quantization_aware.api import qat
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar
    from edgeseg.training.loop import TrainConfig

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, data = _tiny_model(work) if args.synthetic else (Path(args.model), Path(args.data))
    fp32 = work / "model.onnx"
    export(str(model), str(fp32), data=str(data))
    spec, _ = spec_from_sidecar(read_sidecar(fp32))
    evalset = load_eval_set(str(data), spec)
    images = str(Path(data) / "train" / "images")
    name = "qat_vs_ptq_synthetic" if args.synthetic else "qat_vs_ptq"
    previous = RESULTS / f"{name}.json"
    before = json.loads(previous.read_text()) if args.reuse and previous.exists() else {}
    rows, seconds = {"FP32": onnx_miou(fp32, evalset)}, {}

    def timed(step: str, output: Path, make) -> None:
        if not args.reuse:
            output.unlink(missing_ok=True)
        made = make_once(output, make)
        seconds[step] = before.get("seconds", {}).get(step) if made is None else made

    for outputs in (False, True):
        layout = ", Q/DQ on conv outputs too" if outputs else ""
        ptq = work / f"ptq{int(outputs)}.int8.onnx"
        timed(f"calibrate{layout}", ptq,
              lambda: calibrate(str(fp32), images, str(ptq), num=args.num, quantize_outputs=outputs))
        out = work / f"qat{int(outputs)}.int8.onnx"
        training = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-4, val_every=args.epochs,
                               tensorboard=False)
        timed(f"qat{layout}", out, lambda: qat(str(model), str(data), str(out), training=training, images=images,
                                               num=args.num, quantize_outputs=outputs))
        rows[f"calibrate default{layout}"] = onnx_miou(ptq, evalset)
        rows[f"qat {args.epochs} epoch(s){layout}"] = onnx_miou(out, evalset)
        rows[f"FP32 graph qat trained, rounding off{layout}"] = onnx_miou(work / f"qat{int(outputs)}.onnx", evalset)
        if outputs:  # ONNX Runtime fuses this layout into integer kernels that saturate on x86 without VNNI
            rows[f"calibrate default, as written{layout}"] = onnx_miou(ptq, evalset, fused=False)
            rows[f"qat {args.epochs} epoch(s), as written{layout}"] = onnx_miou(out, evalset, fused=False)
    base = rows["FP32"]
    vnni = not saturating_kernels(cpu_flags())
    lines = [f"# QAT vs post-training calibration: {Path(model).name} on {Path(data).name} val "
             f"({len(evalset.batches)} images, ONNX Runtime CPU)", "",
             f"calibrate and qat's starting ranges: {args.num} train images; qat: {args.epochs} epoch(s), batch "
             f"{args.batch_size}, AdamW 1e-4, learned scales, distilled from the FP32 model + labels. "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "The last column compares each INT8 model with the FP32 graph it rounds: the model for calibrate, the "
             "graph qat trained for qat (so the extra training is taken out).", "",
             f"Machine: {machine()['cpu']}, {'with' if vnni else 'without'} VNNI. ONNX Runtime runs the "
             f"Q/DQ-on-outputs models through fused integer kernels, which saturate on x86 without VNNI "
             f"(edgeseg/quant/cpu_int8.py); "
             f"the rows 'as written' run the same models with ONNX Runtime's graph optimisations off, i.e. their own "
             f"Q/DQ arithmetic (what a VNNI CPU, ARM or TensorRT computes, up to rounding).", "",
             "| model | mIoU % | change vs FP32 | INT8 vs its own FP32 |", "|---|---:|---:|---:|"]
    for label, value in rows.items():
        layout = ", Q/DQ on conv outputs too" if label.endswith("outputs too") else ""
        own = (rows["FP32"] if label.startswith("calibrate") else
               rows[f"FP32 graph qat trained, rounding off{layout}"] if label.startswith("qat") else None)
        lines.append(f"| {label} | {value:.2f} | {value - base:+.2f} | "
                     f"{f'{value - own:+.2f}' if own is not None else ''} |")
    lines += ["", "Seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()), ""]
    write_results(name, {"model": str(model), "data": str(data), "epochs": args.epochs, "rows": rows,
                         "seconds": seconds, "machine": machine(), "vnni": vnni}, "\n".join(lines))


if __name__ == "__main__":
    main()
