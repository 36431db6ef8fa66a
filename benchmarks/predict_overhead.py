"""``edgeseg predict`` on a folder vs ``edgeseg bench``'s FPS for the same model (ONNX Runtime CPU).

bench's FPS is inference alone: the Runner called on one pre-processed image. predict
does everything a user's folder needs: JPEG decode, resize + normalise, inference,
class map (host argmax, or none for an ``--argmax`` model), nearest resize back to the
image's size, palette PNG mask, blended JPEG overlay, each file written atomically, in
bench's three-stage pipeline. Rounds alternate bench and predict in one process and
the ratio of the median FPS is reported, per model and per ``--save``.

Models: the committed CamVid pruned student (models/camvid/pruned.onnx, 180x240), the
same exported with ``--argmax``, and LR-ASPP MobileNetV3-Large at 360x480 (untrained,
as in runtime_overhead.py; the input size CamVid's images have). Images: CamVid val.

Target (issue 19): predict >= 0.85 of bench's FPS on a folder for the same model.
Run: python benchmarks/predict_overhead.py [--data ../../shared/data/camvid]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import add_camvid_argument, machine, median, require_camvid, write_results

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.85


def models(folder: Path) -> dict:
    """{name: ONNX path}: the committed pruned student, its --argmax export, a 360x480 LR-ASPP MobileNetV3-Large."""
    import torch

    from edgeseg.arch import create_model
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.exporting.api import export
    from edgeseg.spec import DatasetInfo, InputSpec

    pruned = ROOT / "models" / "camvid" / "pruned.onnx"
    classes = folder / "pruned.classes.onnx"
    export(str(ROOT / "models" / "camvid" / "pruned.pt"), str(classes), argmax=True, verify_images=2)
    torch.manual_seed(0)
    large = create_model("mobilenetv3", 11).eval()
    checkpoint = folder / "large.pt"
    save_checkpoint(checkpoint, large, arch="mobilenetv3", num_classes=11, input_spec=InputSpec(360, 480),
                    dataset=DatasetInfo(11, ignore_index=11))
    export(str(checkpoint), str(folder / "large.onnx"), verify_images=2)
    return {"CamVid pruned student 180x240": pruned, "same, export --argmax": classes,
            "LR-ASPP MobileNetV3-Large 360x480": folder / "large.onnx"}


def run_predict(model: Path, listing: Path, out: Path, save: str, images: int, spin_wait: bool = False) -> dict:
    """predict's summary; ``spin_wait=True`` is the ablation: ONNX Runtime busy-waiting as it does by default."""
    from edgeseg.predict import api

    original = api.Segmenter
    if spin_wait:  # predict always turns spinning off; this puts ONNX Runtime's default back for comparison
        api.Segmenter = lambda *a, **k: original(*a, **dict(k, spin_wait=True))
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # predict's progress bar is not part of the result
            summary = api.predict(str(model), [str(listing)], out, save=[save])
    finally:
        api.Segmenter = original
    assert summary["frames"] == images and summary["skipped"] == 0
    return summary


def bench_fps(model: Path, images: int, spin_wait: bool = True) -> float:
    """bench's FPS; ``spin_wait=False`` runs ONNX Runtime as predict does, for the stricter comparison."""
    from edgeseg.benchmark import api

    original = api.open_runner

    def quiet_runner(*args, **kwargs):
        runner = original(*args, **kwargs)
        runner.spin_wait = False
        return runner

    if not spin_wait:
        api.open_runner = quiet_runner
    try:
        return api.bench_one(model, None, warmup=10, iters=images)["fps"]
    finally:
        api.open_runner = original


def one_round(model: Path, listing: Path, out: Path, save: str, images: int, ablation: bool) -> tuple:
    """(bench FPS, bench FPS without spinning, predict FPS, predict phases, predict FPS with spinning or None)."""
    bench = bench_fps(model, images)
    bench_quiet = bench_fps(model, images, spin_wait=False)
    summary = run_predict(model, listing, out, save, images)
    spinning = run_predict(model, listing, out, save, images, spin_wait=True)["fps"] if ablation else None
    return bench, bench_quiet, summary["fps"], summary["phases_ms"], spinning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    parser.add_argument("--images", type=int, default=48, help="CamVid val images per predict round.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--render", action="store_true", help="Only re-write the Markdown from the committed JSON.")
    args = parser.parse_args()
    if args.render:
        import json

        from common import RESULTS

        document = json.loads((RESULTS / "predict_overhead.json").read_text())
        write_results("predict_overhead", document, render(document))
        return
    data = require_camvid(args.data)
    from edgeseg.data.images import list_images
    from edgeseg.runtime import native

    folder = Path(tempfile.mkdtemp(prefix="edgeseg-predict-overhead-"))
    listing = folder / "images.txt"
    listing.write_text("\n".join(str(p) for p in list_images(data / "val" / "images")[: args.images]) + "\n")
    cases = []
    for model_index, (name, model) in enumerate(models(folder).items()):
        for save in ("masks,overlays", "masks"):
            ablation = model_index == 0 and save == "masks,overlays"
            benches, quiet, predict_fps, phases, spinning = [], [], [], [], []
            load_before = os.getloadavg()[0]
            one_round(model, listing, folder / "warm", save, args.images, False)  # warm-up: file cache, imports
            for index in range(args.rounds):
                b, q, p, split, spin = one_round(model, listing, folder / f"out{index}", save, args.images, ablation)
                benches.append(b)
                quiet.append(q)
                predict_fps.append(p)
                phases.append(split)
                spinning.append(spin)
            ratio = round(median(predict_fps) / median(benches), 3)
            strict = round(median(predict_fps) / median(quiet), 3)
            middle = int(np.argsort(predict_fps)[len(predict_fps) // 2])
            cases.append({"model": name, "save": save, "bench_fps_median": median(benches),
                          "bench_fps_no_spinning_median": median(quiet), "predict_fps_median": median(predict_fps),
                          "ratio": ratio, "target_met": ratio >= TARGET, "ratio_to_bench_without_spinning": strict,
                          "bench_fps_no_spinning": quiet,
                          "predict_phases_ms_median_round": phases[middle],
                          "bench_fps": benches, "predict_fps": predict_fps,
                          "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]})
            if ablation:
                cases[-1]["predict_fps_with_ort_spinning"] = spinning
                cases[-1]["predict_fps_with_ort_spinning_median"] = median(spinning)
                cases[-1]["spinning_off_speedup"] = round(median(predict_fps) / median(spinning), 2)
            print(f"{name} / {save}: bench {median(benches):.1f} FPS ({median(quiet):.1f} without spinning), "
                  f"predict {median(predict_fps):.1f} FPS, ratio {ratio} ({strict})", flush=True)
    document = {"machine": machine(), "host_kernels": native.BACKEND, "images_per_round": args.images,
                "rounds": args.rounds, "target": TARGET, "runtime": "ONNX Runtime CPU",
                "date": time.strftime("%Y-%m-%d"), "cases": cases}
    write_results("predict_overhead", document, render(document))


def _host_ms(case: dict) -> float:
    phases = case["predict_phases_ms_median_round"]
    return phases["decode"] + phases["preprocess"] + phases["postprocess"] + phases["encode"]


def _host_bound(case: dict, document: dict) -> float:
    """Frames a second the host work alone allows when every core does nothing else."""
    return 1000.0 * int(document["machine"]["cores"]) / max(_host_ms(case), 1e-9)


def render(document: dict) -> str:
    """The Markdown table and verdicts, from the JSON document alone (``--render`` re-writes it)."""
    cases = document["cases"]
    rows = []
    for case in cases:
        p = case["predict_phases_ms_median_round"]
        rows.append(f"| {case['model']} | {case['save']} | {case['bench_fps_median']:.1f} | "
                    f"{case['predict_fps_median']:.1f} | **{case['ratio']}** | "
                    f"{case['bench_fps_no_spinning_median']:.1f} | {case['ratio_to_bench_without_spinning']} | "
                    f"{p['decode']:.1f} / "
                    f"{p['preprocess']:.1f} / {p['inference']:.1f} / {p['postprocess']:.1f} / {p['encode']:.1f} | "
                    f"{case['load_average_1min'][0]} / {case['load_average_1min'][1]} |")
    met = [c for c in cases if c["target_met"]]
    spin = next(c for c in cases if "spinning_off_speedup" in c)
    strict = [c["ratio_to_bench_without_spinning"] for c in cases]
    markdown = "\n".join([
        "# predict on a folder vs bench's FPS (ONNX Runtime CPU)", "",
        f"{document['images_per_round']} CamVid val images (360x480 JPEG) per round, {document['rounds']} rounds "
        f"alternating bench and predict in one process; {document['machine']['cpu']}, {document['machine']['cores']} cores (other work: "
        f"see the load average column); host kernels: {document['host_kernels']}; {document['date']}. bench: Runner "
        f"inference on one pre-processed image (its FPS column). predict: decode, pre-process, inference, class "
        f"map, resize to the image's size, PNG mask (and JPEG overlay), atomic writes, pipelined.", "",
        "| model | --save | bench FPS | predict FPS | ratio | bench FPS, no spinning | ratio to it | predict "
        "ms/frame: decode / pre / infer / post / encode | load average before / after |",
        "|---|---|---:|---:|---:|---:|---:|---|---|", *rows, "",
        "predict ran with its default `--streams` (two ONNX Runtime sessions of one thread each on 2 cores, "
        "results re-ordered before encoding). Host work bounds it whatever the model: "
        + "; ".join(f"{c['model']}, {c['save']}: {_host_ms(c):.1f} ms of decode, pre-process, post-process and "
                    f"encode a frame, so at most {_host_bound(c, document):.0f} FPS on {document['machine']['cores']} "
                    f"cores" for c in cases) + ".", "",
        f"Target: ratio >= {TARGET} of bench's FPS. Met in {len(met)} of {len(cases)} cases against bench's own "
        f"figure; against bench without spinning (the stricter reference) the ratio is {min(strict):.2f}-"
        f"{max(strict):.2f}, >= {TARGET} in {sum(r >= TARGET for r in strict)} of {len(cases)}.",
        f"predict turns ONNX Runtime's busy-waiting off (`session.intra_op.allow_spinning=0`): with it on, as "
        f"bench has it, predict made {spin['predict_fps_with_ort_spinning_median']:.1f} FPS in the same rounds "
        f"({spin['model']}, {spin['save']}), so turning it off gives {spin['spinning_off_speedup']}x.",
        "bench, no spinning: bench with ONNX Runtime set as predict sets it, the stricter reference (only "
        "predict's host work differs). On a machine this busy ONNX Runtime's spinning workers also slow bench "
        "itself, which is why predict can out-run bench's own figure.",
        "Phases are summed per thread; decode, pre-process and encode run on other threads than inference, so "
        "their sum can exceed the wall time per frame. On these 2 cores ONNX Runtime's own threads and predict's "
        "decode/encode threads compete for the same cores; the smaller the model's inference time, the larger "
        "that host work is against it.", ""])
    return markdown


if __name__ == "__main__":
    main()
