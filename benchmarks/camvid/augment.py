"""Which training augmentation generalises: `edgeseg train --augment standard` against `--augment reference`.

Issue 27: edgeseg train's LR-ASPP equals a hand-trained one (torchvision's reference recipe:
random scale 0.5-1.0 of the 360x480 frame, crop 180x240, flip) on CamVid val, but is 1.8
mIoU below it on drives neither saw. The suspect is the augmentation: `standard` zooms
0.75-1.5x a frame already shrunk to 180x240 (zoom-ins are upsampled blur, zoom-outs padded)
with colour jitter 0.3; `reference` zooms 1-2x from the full-resolution frame, no jitter.

Both train the same model from the same seed on CamVid train without drive 0006R0 (266
frames), at 180x240, for --epochs, and are judged on 0006R0 (101 frames no model saw), val
beside it, by the same ``onnx_miou`` on ONNX Runtime CPU, for the last and the
best-validated epoch. A recipe already in results/augment_camvid.json is skipped, so the
comparison can be finished in another sitting. Needs quiet CPU: about 1 minute an epoch
each on 2 cores.

    ../../.venv/bin/python augment.py --epochs 50
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import CACHE, RESULTS, add_camvid_argument, machine, make_once, require_camvid, write_results  # noqa: E402
from holdout import split_off_drive  # noqa: E402

HOLDOUT = "0006R0"
ARCH = "lraspp-mobilenetv3-large"
INPUT_SIZE = "180x240"
RECIPES = ("standard", "reference")


def measure(recipe: str, data: Path, evaldata: dict, work: Path, epochs: int) -> dict:
    from edgeseg.exporting.api import export
    from edgeseg.quant.sensitivity import load_eval_set, onnx_miou
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar
    from edgeseg.training.api import train
    from edgeseg.training.loop import TrainConfig

    folder = work / f"{recipe}-{epochs}ep"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "model.pt"
    seconds = make_once(checkpoint, lambda: train(
        ARCH, str(data), str(checkpoint), input_size=INPUT_SIZE,
        training=TrainConfig(epochs=epochs, augment=recipe, val_every=max(1, epochs // 10), tensorboard=False)))
    miou = {}
    for which, source in (("last", checkpoint), ("best", folder / "model.best.pt")):
        onnx = folder / f"{which}.onnx"
        if not onnx.exists():
            export(str(source), str(onnx), data=str(data))
        spec, _ = spec_from_sidecar(read_sidecar(onnx))
        for split, path in evaldata.items():
            miou.setdefault(split, {})[which] = onnx_miou(onnx, load_eval_set(str(path), spec))
    return {"epochs": epochs, "miou": miou, "train_seconds": seconds, "date": time.strftime("%Y-%m-%d")}


def markdown(document: dict) -> str:
    lines = [f"# Training augmentation on CamVid: standard against reference ({ARCH}, {INPUT_SIZE})", "",
             f"`edgeseg train` on CamVid train without drive {HOLDOUT} (266 frames), same seed; mIoU % of the last "
             f"and the best-validated epoch (validated on val, whose drive is in train). {HOLDOUT}: 101 frames no "
             f"model saw. {document['machine']['cpu']}, {document['machine']['cores']} cores.", "",
             f"| augment | epochs | {HOLDOUT} last | {HOLDOUT} best | val last | val best | train seconds | date |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in document["recipes"].items():
        m = row["miou"]
        lines.append(f"| `{name.split('@')[0]}` | {row['epochs']} | {m[HOLDOUT]['last']:.2f} | {m[HOLDOUT]['best']:.2f} "
                     f"| {m['val']['last']:.2f} | {m['val']['best']:.2f} | {row['train_seconds']} | {row['date']} |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--work", default=str(CACHE / "augment-camvid"))
    args = parser.parse_args()

    data, work = require_camvid(args.data), Path(args.work)
    splits = split_off_drive(data, HOLDOUT, work / "splits")
    evaldata = {HOLDOUT: splits["holdout"], "val": data}
    results = RESULTS / "augment_camvid.json"
    document = json.loads(results.read_text()) if results.exists() else {"recipes": {}}
    for recipe in args.recipes:
        key = f"{recipe}@{args.epochs}"
        if key in document["recipes"]:
            print(f"{recipe}, {args.epochs} epochs: measured on {document['recipes'][key]['date']}; skipped")
            continue
        print(f"== --augment {recipe}, {args.epochs} epochs", flush=True)
        document["recipes"][key] = measure(recipe, splits["train"], evaldata, work, args.epochs)
        document["machine"] = machine()
        write_results("augment_camvid", document, markdown(document))


if __name__ == "__main__":
    main()
