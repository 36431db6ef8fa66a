"""``edgeseg report RUN_DIR``: every stage of a run measured alike, as report.md/json and PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeseg.console import say
from edgeseg.errors import ConfigError

FIGURES = {"pareto": "latency_vs_miou.png", "per_class": "per_class_iou.png", "masks": "masks.png"}


def report(run_dir: str, *, data: Optional[str] = None, out: Optional[str] = None, rounds: int = 10,
           iters_per_round: int = 10, warmup: int = 10, mask_images: int = 4, max_images: Optional[int] = None,
           device: str = "cpu", threads: Optional[int] = None, trust_checkpoint: bool = False,
           trust_engine: bool = False, allow_engine_host_code: bool = False, show: bool = True,
           ignore_index: Optional[int] = None) -> dict:
    """Measure each stage listed in ``RUN_DIR/stages.json`` on ``data``'s val split; write the report.

    ``data`` defaults to the data the run was made for; another split of the same layout
    evaluates every stage's artifact there instead. The report goes to ``out`` (default:
    the run folder). ``data``'s class count comes from its dataset.yaml (or standard layout),
    else from the first stage's model; ``ignore_index`` is its unlabelled value where no
    dataset.yaml says it (default: the one the first stage's model was trained with, else 255).

    >>> edgeseg.report("runs/camvid-cpu")  # doctest: +SKIP
    """
    from edgeseg.benchmark.report import write_report
    from edgeseg.benchmark.table import print_table
    from edgeseg.data.dataset import resolve_split
    from edgeseg.plots import latency_accuracy_png
    from edgeseg.report.figures import default_palette, mask_grid_png, per_class_iou_png
    from edgeseg.report.measure import measure_stages
    from edgeseg.report.run_folder import read_run_folder

    if rounds < 1 or iters_per_round < 1 or warmup < 0 or mask_images < 0:
        raise ConfigError("--rounds and --iters must be at least 1; --warmup and --masks cannot be negative.")
    run = read_run_folder(run_dir)
    data = data or run.data
    if not data:
        raise ConfigError(f"{run.root} does not say which data it was made for; pass --data DIR.")
    from edgeseg.benchmark.api import model_classes, model_ignore_index
    from edgeseg.runtime.loader import describe

    first = describe(run.artifact(run.stages[0]), trust_checkpoint) if run.stages else None
    split = resolve_split(data, "val", classes=model_classes(first) if first else None,
                          ignore_index=model_ignore_index(first, ignore_index))
    if max_images:
        split = split.subset(range(min(max_images, len(split))))
    folder = Path(out) if out else run.root
    folder.mkdir(parents=True, exist_ok=True)
    say(f"Measuring {len(run.stages)} stages on {len(split)} images of {split.root}")
    measured = measure_stages({s.name: run.artifact(s) for s in run.stages}, split, rounds=rounds,
                              iters_per_round=iters_per_round, warmup=warmup, mask_images=mask_images,
                              device=device, threads=threads, trust_checkpoint=trust_checkpoint,
                              trust_engine=trust_engine, allow_engine_host_code=allow_engine_host_code)
    rows = measured["rows"]
    info = split.info
    palette = list(info.palette) or default_palette(info.num_classes)
    figures = {
        "latency vs mIoU": latency_accuracy_png(
            folder / FIGURES["pareto"], {r["stage"]: [{"x": r["latency_ms"]["p50"], "y": r["miou"]}] for r in rows},
            title=f"{run.title}: mIoU vs latency per stage ({device}, batch 1)"),
        "per-class IoU": per_class_iou_png(folder / FIGURES["per_class"], rows, title=f"{run.title}: per-class IoU"),
    }
    if measured["masks"]["images"]:
        figures["predicted masks"] = mask_grid_png(
            folder / FIGURES["masks"], measured["masks"], palette=palette, class_names=info.class_names(),
            title=f"{rows[0]['stage']} vs {rows[-1]['stage']} vs ground truth")
    timing = measured["timing"]
    notes = list(run.notes) + [
        f"mIoU over all {len(split)} images of {split.root}, predictions resized to the labels' native size.",
        f"Latency: batch 1 on {device}, {timing['rounds']} rounds x {timing['iters_per_round']} calls with the "
        f"stages taking turns (after {timing['warmup']} warm-up calls each), so speed-ups compare like with like: "
        f"each is the median over rounds of that round's ratio of p50s, with the lowest and highest round's in "
        f"brackets (a wide bracket means the machine was too noisy to tell)."]
    document = write_report(folder, rows, title=run.title,
                            dataset={"name": info.name, "root": str(split.root), "num_images": len(split),
                                     "num_classes": info.num_classes},
                            notes=notes, figures={k: Path(v).name for k, v in figures.items()}, timing=timing)
    if show:
        print_table(rows, title=run.title)
    say(f"Wrote {folder / 'report.md'}, {folder / 'report.json'} and {len(figures)} figures")
    return document
