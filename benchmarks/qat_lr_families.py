"""Is QAT's 1e-4 the reason it falls below calibration? The family table's QAT again at a tenth of the rate.

In results/qat_families.md, `edgeseg qat` (defaults: AdamW at 1e-4, learned activation scales,
distilled from the FP32 model + labels) ends below calibration on drive 0006R0 for some
families, and the FP32 graph it trained (rounding off) is as low: the training moved the
model, not the rounding. This script trains the same QAT from the same checkpoints, the
same calibrated start and seed, at 1e-5, in both layouts, and puts it beside calibrate and
the 1e-4 QAT of the family table (read from results/qat_families.json; every INT8 model as
written, ONNX Runtime's graph optimisations off, the way the family table judges its targets).

It needs the family table's work folder (benchmarks/cache/qat-families: each family's
model.pt, model.onnx and ptq-*.int8.onnx). Rows are kept in results/qat_lr_families.json as
soon as they are measured, and measured families are skipped.

    ../.venv/bin/python qat_lr_families.py --families pspnet-mobilenetv3 enet
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import CACHE, RESULTS, add_camvid_argument, machine, make_once, require_camvid, write_results
from qat_families import FAMILIES, HOLDOUT, LAYOUTS, split_off_drive

LR = 1e-5


def measure(arch: str, folder: Path, images: Path, data: Path, evaldata: dict, qat_epochs: int) -> dict:
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.quantization_aware.api import qat
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar
    from edgeseg.training.loop import TrainConfig

    seconds, models = {}, {}
    for layout, outputs in LAYOUTS.items():
        out = folder / f"qat-{layout}-lr{LR:g}.int8.onnx"
        seconds[f"qat {layout}"] = make_once(out, lambda: qat(
            str(folder / "model.pt"), str(data), str(out), images=str(images), quantize_outputs=outputs,
            training=TrainConfig(epochs=qat_epochs, batch_size=8, lr=LR, val_every=qat_epochs, tensorboard=False)))
        models[f"qat {layout}"] = (out, False)  # as written
        models[f"qat-trained fp32 {layout}"] = (folder / f"qat-{layout}-lr{LR:g}.onnx", True)
    spec, _ = spec_from_sidecar(read_sidecar(folder / "model.onnx"))
    miou = {}
    for split, path in evaldata.items():
        evalset = load_eval_set(str(path), spec)
        miou[split] = {name: onnx_miou(model, evalset, fused=fused) for name, (model, fused) in models.items()}
    return {"lr": LR, "qat_epochs": qat_epochs, "miou": miou, "seconds": seconds, "date": time.strftime("%Y-%m-%d")}


def markdown(document: dict, table: dict) -> str:
    lines = [f"# QAT at {LR:g} against the family table's 1e-4 (CamVid, 180x240, INT8 as written)", "",
             f"Same checkpoints, calibrated start, seed and epochs as results/qat_families.md (trained without drive "
             f"{HOLDOUT}); only the QAT learning rate differs. Each cell: mIoU (change from FP32). **fp32 of qat** is "
             f"the graph that QAT trained, its rounding off: where it falls as far as QAT, the training moved the "
             f"model, not the rounding. {document['machine']['cpu']}, {document['machine']['cores']} cores.", ""]
    for split in (HOLDOUT, "val"):
        lines += [f"## mIoU % on {'drive ' + HOLDOUT + ' (no model trained on it)' if split == HOLDOUT else 'val'}",
                  "", "| family | layout | FP32 | calibrate | qat 1e-4 | its fp32 | "
                  f"qat {LR:g} | its fp32 | {LR:g} not below calibrate |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for arch, row in document["families"].items():
            table_row = table["families"][arch]
            base_row = table_row["miou"][split]
            # the family table now measures QAT at 1e-5 itself and keeps its 1e-4 figures aside
            old_qat = table_row["earlier_qat"]["miou"][split] if "earlier_qat" in table_row else base_row
            fp32 = base_row["fp32"]
            for layout in LAYOUTS:
                calibrated = base_row[f"calibrate {layout}, as written"]
                old, new = old_qat[f"qat {layout}, as written"], row["miou"][split][f"qat {layout}"]
                cells = [f"{v:.2f} ({v - fp32:+.2f})" for v in (calibrated, old)]
                cells += [f"{old_qat[f'qat-trained fp32 {layout}']:.2f}", f"{new:.2f} ({new - fp32:+.2f})",
                          f"{row['miou'][split][f'qat-trained fp32 {layout}']:.2f}",
                          "yes" if new >= calibrated else f"no ({new - calibrated:+.2f})"]
                lines.append(f"| `{arch}` | {layout} | {fp32:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Seconds: " + "; ".join(f"`{arch}` " + ", ".join(f"{k} {v}" for k, v in row["seconds"].items())
                                       for arch, row in document["families"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--families", nargs="+", required=True, choices=FAMILIES)
    parser.add_argument("--work", default=str(CACHE / "qat-families"))
    args = parser.parse_args()

    data, work = require_camvid(args.data), Path(args.work)
    table = json.loads((RESULTS / "qat_families.json").read_text())
    splits = split_off_drive(data, HOLDOUT, work / "splits")
    evaldata = {HOLDOUT: splits["holdout"], "val": data}
    results = RESULTS / "qat_lr_families.json"
    document = json.loads(results.read_text()) if results.exists() else {"families": {}}
    for arch in args.families:
        if arch in document["families"]:
            print(f"{arch}: measured on {document['families'][arch]['date']}; skipped")
            continue
        if arch not in table["families"] or not (work / arch / "model.pt").exists():
            raise SystemExit(f"{arch} is not in the family table or its work folder; run qat_families.py first.")
        print(f"== {arch}", flush=True)
        document["families"][arch] = measure(arch, work / arch, splits["train"] / "train" / "images",
                                             splits["train"], evaldata, table["families"][arch]["qat_epochs"])
        document["machine"] = machine()
        write_results("qat_lr_families", document, markdown(document, table))


if __name__ == "__main__":
    main()
