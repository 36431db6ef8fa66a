"""A Hugging Face SegFormer-B0 folder through the whole pipeline, as a user types it.

Why: the manual's "Bring your own model" guide shows these commands; this runs them, as
written, on a folder shaped like ``nvidia/segformer-b0-finetuned-ade-512-512`` (B0's
exact configuration, ADE20K's 150 labels, its image processor at 512x512), and records
what each verb printed, the files it wrote, and how far each artifact's masks stay from
transformers' own (its model, its post-processing) on the same images.

No download happens: this machine has no internet, so the folder holds random weights
(``save_pretrained`` of a freshly built model). Accuracy on a real dataset therefore
means nothing here and is not measured; agreement with transformers and the sizes are.

Run: ../.venv/bin/python hf_segformer_pipeline.py [--work /tmp/hf-b0] [--size 512]
Writes results/hf-segformer-b0.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EDGESEG = [sys.executable, "-m", "edgeseg.cli.main"]


def make_folder(folder: Path, size: int) -> None:
    """SegFormer-B0 as nvidia/segformer-b0-finetuned-ade-512-512 configures it, with random weights."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=[1, 2, 5, 8],
        sr_ratios=[8, 4, 2, 1], decoder_hidden_size=256, num_labels=150,
        id2label={i: f"ade{i}" for i in range(150)}, label2id={f"ade{i}": i for i in range(150)})
    transformers.SegformerForSemanticSegmentation(config).eval().save_pretrained(folder)
    transformers.SegformerImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    from PIL import Image

    from edgeseg.data.synthetic import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image, _ = render_scene(rng, 360, 480)
        Image.fromarray(image).save(folder / f"street{index:02d}.jpg", quality=92)


def run(command: str, work: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(EDGESEG + shlex.split(command)[1:], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"`{command}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {"command": command, "seconds": round(seconds, 1), "output": (done.stdout + done.stderr).strip()}


def agreement_with_transformers(work: Path, folder: Path, images: Path, artifacts) -> dict:
    """Pixels whose class equals transformers' own pipeline's, per artifact, over the images."""
    import torch
    import transformers

    from edgeseg.predict.segmenter import Segmenter

    model = transformers.SegformerForSemanticSegmentation.from_pretrained(folder, local_files_only=True).eval()
    processor = transformers.SegformerImageProcessor.from_pretrained(folder, local_files_only=True)
    from edgeseg.data.images import list_images, read_image

    pictures = [read_image(p) for p in list_images(images)]
    reference = []
    for picture in pictures:
        with torch.no_grad():
            out = model(**processor(images=picture, return_tensors="pt"))
        reference.append(processor.post_process_semantic_segmentation(out, target_sizes=[picture.shape[:2]])[0]
                         .numpy())
    result = {}
    for name in artifacts:
        with Segmenter(work / name) as segmenter:
            same = [float((segmenter(p) == r).mean()) for p, r in zip(pictures, reference)]
        result[name] = round(100 * float(np.mean(same)), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-b0"))
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    folder = args.work / "segformer-b0-finetuned-ade-512-512"
    make_folder(folder, args.size)
    make_images(args.work / "calib", 8)
    commands = [
        "edgeseg info segformer-b0-finetuned-ade-512-512/",
        "edgeseg export segformer-b0-finetuned-ade-512-512/ --out segformer.onnx",
        "edgeseg prune segformer-b0-finetuned-ade-512-512/ --ratio 0.3 --out pruned.pt",
        "edgeseg export pruned.pt",
        "edgeseg calibrate segformer.onnx --images calib/ --num 8",
        "edgeseg build-engine segformer.onnx --int8 --print-trtexec",
        "edgeseg bench segformer-b0-finetuned-ade-512-512/ segformer.onnx segformer.int8.onnx pruned.onnx "
        "--iters 5 --warmup 2 --json bench.json",
    ]
    steps = [run(c, args.work) for c in commands]
    bench = json.loads((args.work / "bench.json").read_text())["results"]
    load = os.getloadavg()[0]  # other jobs on this machine make the latencies incomparable: say how busy it was
    agreement = agreement_with_transformers(args.work, folder, args.work / "calib",
                                            [folder.name, "segformer.onnx", "segformer.int8.onnx", "pruned.onnx"])
    rows = [{"artifact": Path(r["artifact"]).name, "backend": r["backend"], "precision": r["precision"],
             "params_m": round(r["params"] / 1e6, 3) if r.get("params") else None,
             "gmacs": round(r["macs"] / 1e9, 3) if r.get("macs") else None, "size_mb": r["size_mb"],
             "latency_p50_ms": r["latency_ms"]["p50"]} for r in bench]
    import torch
    import transformers

    record = {"what": "SegFormer-B0 (ADE20K's configuration, random weights) from a save_pretrained folder",
              "input": [args.size, args.size], "transformers": transformers.__version__, "torch": torch.__version__,
              "steps": steps, "bench": rows, "pixels_equal_to_transformers_percent": agreement,
              "load_average_1min_at_bench": round(load, 2),
              "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hf-segformer-b0.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# A Hugging Face SegFormer-B0 folder through the pipeline ({record['date']})", "",
             f"{record['what']}, input {args.size}x{args.size}, transformers {record['transformers']}, torch "
             f"{record['torch']}; 2-core CPU, ONNX Runtime CPU. The folder's weights are random, so no accuracy is "
             f"claimed. Latencies: 5 iterations with a 1-minute load average of {load:.1f} on 2 cores when bench ran, "
             f"so they only show that each artifact runs (INT8 in TensorRT's Q/DQ layout is not the CPU's fast "
             f"layout); see benchmarks/results/ for timed comparisons. Made by "
             f"`benchmarks/hf_segformer_pipeline.py`.",
             "", "| step | seconds |", "|---|---:|"]
    lines += [f"| `{s['command']}` | {s['seconds']} |" for s in steps]
    lines += ["", "| artifact | backend | precision | params (M) | GMACs | size MB | p50 ms | pixels = transformers' |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        same = agreement.get(row["artifact"], "-")
        lines.append(f"| {row['artifact']} | {row['backend']} | {row['precision']} | {row['params_m']} | "
                     f"{row['gmacs']} | {row['size_mb']} | {row['latency_p50_ms']} | {same} |")
    lines += ["", "Pixels = transformers': share of pixels, over the 8 calibration images at their own 360x480 size, "
              "whose class equals transformers' own pipeline (its image processor, model and "
              "post_process_semantic_segmentation), each artifact run through edgeseg's Segmenter. Random weights "
              "leave the 150 logits nearly tied, so the two pipelines' different resizing (transformers: image "
              "resized by its processor, logits upsampled straight to the image size; edgeseg: its own image resize, "
              "logits upsampled to the 512x512 input, argmax, nearest to the image size) flips a few percent of "
              "pixels even in FP32 and in PyTorch (the folder's own row); a trained model has fewer near-ties (not "
              "measured here). The pruned model was not fine-tuned "
              "(nothing to recover from random weights), so its masks are expected to differ.", "",
              "## What each verb printed", ""]
    for step in steps:
        lines += [f"`{step['command']}`", "", "```", step["output"][-3000:], "```", ""]
    (RESULTS / "hf-segformer-b0.md").write_text("\n".join(lines))
    print("\n".join(lines[:30]))


if __name__ == "__main__":
    main()
