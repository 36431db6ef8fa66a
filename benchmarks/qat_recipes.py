"""QAT recipes against calibration on the CamVid benchmark's LR-ASPP, Q/DQ on op inputs (TensorRT's layout).

The QAT issue's target for this model: QAT's drop at most half of calibration's. Each row is
``edgeseg.qat`` from models/camvid/pruned.pt with one recipe (learning rate, epochs, learned
or fixed activation scales), starting from calibrate's default ranges on 100 train images;
every model is measured by the same ``onnx_miou`` on CamVid val (pruned.pt trained on all of
train, so no drive is unseen for it). Models already in --work are measured again, not made
again (so a run can be finished in another sitting).

    ../.venv/bin/python qat_recipes.py [--work /tmp/edgeseg-qat-recipes]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import add_camvid_argument, machine, make_once, require_camvid, write_results

ROOT = Path(__file__).resolve().parents[1]
# name: (learning rate, epochs, learned scales)
RECIPES = {"qat default lr 1e-4, 5 epochs, learned scales": (1e-4, 5, True),
           "lr 1e-5, 2 epochs, learned scales": (1e-5, 2, True),
           "lr 1e-5, 2 epochs, fixed scales": (1e-5, 2, False)}
NUM = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--model", default=str(ROOT / "models" / "camvid" / "pruned.pt"))
    parser.add_argument("--work", default="/tmp/edgeseg-qat-recipes")
    args = parser.parse_args()

    from edgeseg.exporting.api import export
    from edgeseg.quant.api import calibrate
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.quantization_aware.api import qat
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar
    from edgeseg.training.loop import TrainConfig

    data, work = require_camvid(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    images = str(data / "train" / "images")
    fp32 = work / "model.onnx"
    if not fp32.exists():
        export(args.model, str(fp32), data=str(data))
    evalset = load_eval_set(str(data), spec_from_sidecar(read_sidecar(fp32))[0])
    ptq = work / "ptq.int8.onnx"
    if not ptq.exists():
        calibrate(str(fp32), images, str(ptq), num=NUM)
    rows = {"FP32": {"int8": onnx_miou(fp32, evalset)}, "calibrate default": {"int8": onnx_miou(ptq, evalset)}}
    for name, (lr, epochs, learn) in RECIPES.items():
        stem = f"qat-lr{lr:g}-{epochs}ep-{'learned' if learn else 'fixed'}"
        out = work / f"{stem}.int8.onnx"
        seconds = make_once(out, lambda: qat(
            args.model, str(data), str(out), images=images, num=NUM, learn_scales=learn,
            training=TrainConfig(epochs=epochs, batch_size=8, lr=lr, val_every=epochs, tensorboard=False)))
        rows[name] = {"int8": onnx_miou(out, evalset), "trained_fp32": onnx_miou(work / f"{stem}.onnx", evalset),
                      "seconds": seconds}
    base, calibrated = rows["FP32"]["int8"], rows["calibrate default"]["int8"]
    half = (base - calibrated) / 2
    lines = [f"# QAT recipes on {Path(args.model).name}, Q/DQ on op inputs (CamVid val, ONNX Runtime CPU)", "",
             f"Calibration and QAT's starting ranges: {NUM} train images. Target: QAT's drop at most half of "
             f"calibration's ({half:.2f}). {time.strftime('%Y-%m-%d')}, {machine()['cpu']}. Differences of a tenth "
             f"are within what 101 val frames of one drive tell apart.", "",
             "| model | mIoU % | change vs FP32 | its trained FP32 graph | target |", "|---|---:|---:|---:|---|"]
    for name, row in rows.items():
        drop = base - row["int8"]
        target = "" if name in ("FP32", "calibrate default") else ("met" if drop <= half else "missed")
        trained = f"{row['trained_fp32']:.2f}" if "trained_fp32" in row else ""
        lines.append(f"| {name} | {row['int8']:.2f} | {row['int8'] - base:+.2f} | {trained} | {target} |")
    write_results("qat_recipes", {"model": args.model, "rows": rows, "machine": machine()}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
