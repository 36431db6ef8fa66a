"""How long must KD recovery run after pruning 40%? One pruned structure, several fine-tuning lengths.

Starts from the same CamVid student as prune_camvid.py (common.camvid_student, trained by
`edgeseg train`). `edgeseg prune --ratio 0.4 --importance taylor --round-to 8` with one
seed gives the same channels every time; each run fine-tunes that structure with KD from
the unpruned model for a different number of epochs (each a full schedule of its own,
not a snapshot of a longer one). Latency: the unpruned and pruned ONNX exports timed
interleaved in ONNX Runtime on the CPU, before any training starts, so nothing else runs
beside the timing. mIoU on all of CamVid val at the labels' native 360x480.
Target (issue 6): at a 0.4 ratio, >= 1.6x speed-up with <= 1.0 mIoU loss after fine-tuning.

Run: python benchmarks/prune_recovery.py [--data ../shared/data/camvid] [--epochs 8 30 60]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import (CACHE, RESULTS, add_camvid_argument, camvid_student, machine, median, require_camvid,
                    write_results)
from prune_camvid import TARGET_LOSS, TARGET_RATIO, TARGET_SPEEDUP, time_onnxruntime

ROOT = Path(__file__).resolve().parents[1]
WORK = CACHE / "prune-recovery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--epochs", type=int, nargs="+", default=[8, 30, 60], help="Fine-tuning lengths to compare.")
    parser.add_argument("--importance", default="taylor")
    parser.add_argument("--rounds", type=int, default=30, help="Interleaved latency rounds per model.")
    args = parser.parse_args()
    data = require_camvid(args.data)

    from edgeseg.arch.profile import count_macs
    from edgeseg.benchmark.api import eval as evaluate
    from edgeseg.checkpoint import load_model
    from edgeseg.pruning.api import prune

    started = time.perf_counter()
    base = camvid_student(data)
    WORK.mkdir(parents=True, exist_ok=True)
    options = dict(ratio=TARGET_RATIO, importance=args.importance, round_to=8, seed=0, data=str(data))

    def pruned(epochs: int) -> Path:
        path = WORK / f"{args.importance}-{TARGET_RATIO}-ft{epochs}.pt"
        if not path.exists():  # prune writes atomically: an existing file is a finished run
            prune(str(base), str(path), finetune_epochs=epochs, **options)
        return path

    structure = pruned(0)
    latencies = time_onnxruntime({"unpruned": base, "pruned": structure}, args.rounds)
    speedup = round(median(latencies["unpruned"]) / median(latencies["pruned"]), 3)
    base_miou = evaluate(str(base), str(data))["miou"]
    spec = load_model(base).input_spec
    rows = [{"finetune_epochs": 0, "miou": evaluate(str(structure), str(data))["miou"], "minutes": 0.0}]
    # a fine-tuning cached by an earlier run keeps the minutes that run measured
    previous = RESULTS / "prune_recovery.json"
    earlier = ({r["finetune_epochs"]: r["minutes"] for r in json.loads(previous.read_text())["rows"]}
               if previous.exists() else {})
    for epochs in sorted(args.epochs):
        cached = (WORK / f"{args.importance}-{TARGET_RATIO}-ft{epochs}.pt").exists()
        begun = time.perf_counter()
        path = pruned(epochs)
        minutes = earlier.get(epochs) if cached else round((time.perf_counter() - begun) / 60, 1)
        rows.append({"finetune_epochs": epochs, "miou": evaluate(str(path), str(data))["miou"], "minutes": minutes})
        print(rows[-1], flush=True)
    for row in rows:
        row["loss"] = round(base_miou - row["miou"], 2)
    met = [r["finetune_epochs"] for r in rows if speedup >= TARGET_SPEEDUP and r["loss"] <= TARGET_LOSS]
    document = {"machine": machine(), "importance": args.importance, "ratio": TARGET_RATIO,
                "base": {"checkpoint": base.name, "miou": base_miou, "latency_ms": median(latencies["unpruned"]),
                         "macs": count_macs(load_model(base).model, spec.height, spec.width)},
                "pruned": {"latency_ms": median(latencies["pruned"]), "speedup": speedup,
                           "macs": count_macs(load_model(structure).model, spec.height, spec.width)},
                "rows": rows, "latency_samples_ms": latencies,
                "target": {"speedup_at_least": TARGET_SPEEDUP, "miou_loss_at_most": TARGET_LOSS,
                           "met_with_epochs": met},
                "minutes": round((time.perf_counter() - started) / 60, 1)}
    write_results("prune_recovery", document, markdown(document))


def markdown(document: dict) -> str:
    base, pruned = document["base"], document["pruned"]
    lines = [f"# KD recovery after pruning {document['ratio']:.0%} ({document['importance']}) on CamVid", "",
             f"Unpruned student: {base['miou']:.2f} mIoU, {base['macs'] / 1e6:.0f} M MACs, {base['latency_ms']:.2f} ms; "
             f"pruned: {pruned['macs'] / 1e6:.0f} M MACs, {pruned['latency_ms']:.2f} ms, **{pruned['speedup']:.2f}x** "
             f"(ONNX Runtime CPU, {document['machine']['cores']} cores, median of interleaved rounds). Each row is its "
             f"own fine-tuning schedule (KD from the unpruned model, AdamW 5e-4, poly) on the same channels. "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "| KD epochs | mIoU | loss vs unpruned | minutes |", "|---:|---:|---:|---:|"]
    for r in document["rows"]:
        minutes = "-" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append(f"| {r['finetune_epochs']} | {r['miou']:.2f} | {r['loss']:+.2f} | {minutes} |")
    target = document["target"]
    lines += ["", f"Target: >= {target['speedup_at_least']}x with <= {target['miou_loss_at_most']} mIoU loss: "
              + (f"met with {', '.join(map(str, target['met_with_epochs']))} KD epochs." if target["met_with_epochs"]
                 else "NOT met."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
