"""Distillation on CamVid: does a frozen teacher make the same student, with the same budget, better?

One run, recipe models/camvid-distill.yaml: a DeepLabV3-MobileNetV3 teacher trained by `edgeseg train`,
then LR-ASPP MobileNetV3-Large students with the same seed, epochs and optimizer:
cross-entropy only; + pixel-wise KL; + channel-wise distillation (CWD); + KL + CWD.
Every model is evaluated on all of CamVid val at the labels' native 360x480. Target
(issue 5): the best distilled student >= 2.0 mIoU above cross-entropy only, with a
teacher of at least 3x the student's MACs. Trained models are cached under
benchmarks/cache/distill/ so an interrupted run picks up where it stopped.

Run: python benchmarks/distill_camvid.py [--data ../shared/data/camvid]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import add_camvid_argument, require_camvid, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / "cache" / "distill"
RECIPE = ROOT / "models" / "camvid-distill.yaml"
VARIANTS = {"cross-entropy only": None, "+ KL": "kl", "+ CWD": "cwd", "+ KL + CWD": "kl+cwd"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_camvid_argument(parser)
    args = parser.parse_args()
    data = require_camvid(args.data)

    import yaml

    from edgeseg.benchmark.api import eval as evaluate
    from edgeseg.checkpoint import load_model
    from edgeseg.distillation.api import distill
    from edgeseg.fileio import sha256_of
    from edgeseg.training.api import train
    from edgeseg.arch.profile import count_macs

    recipe = yaml.safe_load(RECIPE.read_text())
    teacher_recipe, student_recipe = dict(recipe["train"]), dict(recipe["distill"])
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    minutes = {}

    def timed(key, path, make):
        """Train ``path`` unless it is cached; a run killed mid-way resumes from its .state file."""
        if not path.exists():
            t0 = time.perf_counter()
            make()
            minutes[key] = round((time.perf_counter() - t0) / 60, 1)
        return path

    def resume(path: Path) -> bool:
        return path.with_name(path.name + ".state").exists()

    teacher_arch = teacher_recipe["arch"]
    teacher_path = CACHE / f"teacher-{teacher_arch}-{teacher_recipe['epochs']}ep.pt"
    teacher = timed("teacher", teacher_path, lambda: train(
        teacher_recipe.pop("arch"), str(data), str(teacher_path), resume=resume(teacher_path), **teacher_recipe))
    students = {}
    for label, loss in VARIANTS.items():
        path = CACHE / f"student-{loss or 'ce'}.pt"
        options = {k: v for k, v in student_recipe.items() if k not in ("loss", "student")}
        if loss is None:  # the same optimisation, no teacher
            options = {k: v for k, v in options.items() if k not in ("temperature", "loss_weights")}
            students[label] = timed(label, path, lambda: train(student_recipe["student"], str(data), str(path),
                                                               resume=resume(path), **options))
        else:
            students[label] = timed(label, path, lambda: distill(str(teacher), str(data), str(path),
                                                                 student=student_recipe["student"], loss=loss,
                                                                 resume=resume(path), **options))

    height, width = (int(v) for v in student_recipe["input_size"].split("x"))
    macs = {"teacher": count_macs(load_model(str(teacher)).model, height, width),
            "student": count_macs(load_model(str(students["cross-entropy only"])).model, height, width)}
    rows = {f"teacher ({teacher_arch}, reference)": evaluate(str(teacher), str(data))}
    for label, path in students.items():
        rows[label] = evaluate(str(path), str(data))
    baseline = rows["cross-entropy only"]["miou"]
    distilled = {k: v["miou"] for k, v in rows.items() if k.startswith("+")}
    best = max(distilled, key=distilled.get)
    document = {"machine": machine(), "recipe": recipe, "macs": macs,
                "teacher_to_student_macs": round(macs["teacher"] / macs["student"], 2),
                "miou": {k: v["miou"] for k, v in rows.items()},
                "per_class_iou": {k: v["per_class_iou"] for k, v in rows.items()},
                "sha256": {p.name: sha256_of(p) for p in [teacher, *students.values()]},
                "best_distilled": best, "gain_over_ce": round(distilled[best] - baseline, 2),
                "targets": {"best_distilled_at_least_2.0_above_ce": distilled[best] - baseline >= 2.0,
                            "teacher_at_least_3x_student_macs": macs["teacher"] >= 3 * macs["student"]},
                "training_minutes": minutes, "minutes": round((time.perf_counter() - started) / 60, 1)}
    lines = ["# Distillation on CamVid (train -> val, 101 images at 360x480)", "",
             f"Recipe `models/camvid-distill.yaml`: teacher {teacher_arch} {teacher_recipe.get('epochs')} epochs, "
             f"students LR-ASPP MobileNetV3-Large {student_recipe['epochs']} epochs each, all from scratch at "
             f"{student_recipe['input_size']} on a {machine()['cores']}-core CPU; T={student_recipe['temperature']}, "
             f"weights {student_recipe['loss_weights']}; {time.strftime('%Y-%m-%d')}. Teacher/student MACs: "
             f"{document['teacher_to_student_macs']}x.", "",
             "| model | mIoU % | vs cross-entropy only |", "|---|---:|---:|"]
    for label, result in rows.items():
        lines.append(f"| {label} | {result['miou']:.2f} | {result['miou'] - baseline:+.2f} |")
    lines += ["", f"Best distilled: {best}, {document['gain_over_ce']:+.2f} mIoU over cross-entropy only.", "",
              "Targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in document["targets"].items()),
              ""]
    write_results("distill_camvid", document, "\n".join(lines))


if __name__ == "__main__":
    main()
