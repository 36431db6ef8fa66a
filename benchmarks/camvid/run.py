"""The CamVid compression benchmark: the user's model -> deployable engine, with edgeseg's public commands only.

    python benchmarks/camvid/run.py --profile cpu --data ../shared/data/camvid [--out runs/camvid-cpu]
    python benchmarks/camvid/run.py --from runs/camvid-cpu --eval-data other/camvid-split   # no training

Stages: train the user's model as a user would (`edgeseg train`) -> [distill a smaller
student from it, where the profile says so] -> prune with KD fine-tuning from the unpruned
model -> export -> calibrate INT8 (default calibration) -> build the engine -> `edgeseg
report` measures every stage on val, the user's model first. Every command is printed and
appended to RUN_DIR/commands.sh, so the run can be replayed by hand. A stage whose output
exists is not run again (edgeseg writes atomically, so an existing file is a finished one):
an interrupted run continues, and a killed train/distill step resumes from its last
finished epoch. With --publish the report goes to benchmarks/results/camvid-<profile>/ and
the artifacts under 20 MB to models/camvid/ with a card.

With --holdout-drive 0006R0 that drive is left out of training, every stage is also reported on
it (a column beside val), and the targets are judged there. Targets, in the report's own interleaved timing: the final INT8 model
within 1.0 mIoU of the user's model, and its FP32 twin (the pruned ONNX) at least 2.0x
faster than the user's model's ONNX on ONNX Runtime CPU; the whole run within 150 minutes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from profiles import PROFILES, Profile  # noqa: E402

TARGET_MIOU_GAP = 1.0
TARGET_SPEEDUP = 2.0
TARGET_MINUTES = 150
PUBLISHED_ARTIFACTS = ("user.pt", "user.onnx", "student.pt", "pruned.pt", "pruned.onnx", "pruned.int8.onnx",
                       "pruned.calib.cache", "pruned.ranges.json")
MAX_PUBLISHED_MB = 20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--data", help="CamVid-layout data (train/ and val/ with images/ and labels/).")
    parser.add_argument("--out", help="Run folder [default: runs/camvid-<profile>].")
    parser.add_argument("--eval-data", help="Evaluate every stage on this data's val split instead.")
    parser.add_argument("--from", dest="from_run", help="Re-evaluate a finished run folder; trains nothing.")
    parser.add_argument("--holdout-drive", metavar="DRIVE",
                        help="Leave this drive's frames (e.g. 0006R0) out of train/ (symbolic links under "
                             "RUN_DIR/splits/), train and compress on the rest, and report every stage on them "
                             "beside val; the targets are then judged on that drive.")
    parser.add_argument("--publish", action="store_true",
                        help="Copy the report to benchmarks/results/camvid-<profile>/ and artifacts to models/camvid/.")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    started = time.perf_counter()
    if args.from_run:
        run_dir = Path(args.from_run)
        if not (run_dir / "stages.json").is_file():
            parser.error(f"{run_dir} is not a finished run (no stages.json); run without --from first.")
    else:
        if not args.data:
            parser.error("--data is required unless --from is given.")
        if not Path(args.data).is_dir():
            print(f"CamVid data not found at {args.data}; see ../shared/data/README.md.", file=sys.stderr)
            return 2
        # a run without the drive left out is another run: its models saw the drive, and existing outputs are reused
        holdout_suffix = f"-holdout-{args.holdout_drive}" if args.holdout_drive else ""
        run_dir = Path(args.out or f"runs/camvid-{args.profile}{holdout_suffix}")
        data = Path(args.data)
        if args.holdout_drive:
            from holdout import split_off_drive

            splits = split_off_drive(data, args.holdout_drive, run_dir / "splits")
            data, args.holdout_data = splits["train"], splits["holdout"]
        skipped = run_pipeline(profile, args.profile, data, run_dir)
    if args.holdout_drive:
        args.holdout_data = require_trained_without(run_dir, args.holdout_drive)
    report_dir = run_dir if not args.eval_data else run_dir / f"eval-{Path(args.eval_data).name}"
    command = ["report", str(run_dir), "--out", str(report_dir), "--device", "cpu"] + options(profile.report)
    if args.eval_data:
        command += ["--data", args.eval_data]
    edgeseg(run_dir, command)
    judged = report_dir
    if args.holdout_drive:  # the same stages on the drive training never saw; the targets are judged there
        judged = run_dir / f"holdout-{args.holdout_drive}"
        edgeseg(run_dir, ["report", str(run_dir), "--out", str(judged), "--device", "cpu", "--data",
                          str(args.holdout_data)] + options(profile.report))
        append_holdout_column(report_dir, judged, args.holdout_drive)
    minutes = round((time.perf_counter() - started) / 60, 1)
    targets = check_targets(judged, minutes)
    if args.from_run:
        scope = "the report only, with --from"
    elif skipped:
        scope = f"{', '.join(skipped)} came from an earlier, interrupted invocation and were not made again"
    else:
        scope = "every stage, from training the user's model to the report"
    append_targets(report_dir, targets, minutes, scope,
                   judged_on=f"drive {args.holdout_drive}, which training never saw" if args.holdout_drive else "val")
    print(json.dumps(targets, indent=2))
    if args.publish:
        publish(run_dir, report_dir, args.profile, judged if args.holdout_drive else None)
    return 0


def options(settings: dict) -> list:
    """{"epochs": 10, "amp": True} -> ["--epochs", "10", "--amp"]."""
    out = []
    for key, value in settings.items():
        if value is True:
            out.append(f"--{key}")
        elif value is not False and value is not None:
            out += [f"--{key}", str(value)]
    return out


def edgeseg(run_dir: Path, arguments: list) -> None:
    """Run one edgeseg command, logging it to RUN_DIR/commands.sh first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    line = "edgeseg " + " ".join(shlex.quote(a) for a in arguments)
    print(f"\n$ {line}", flush=True)
    with open(run_dir / "commands.sh", "a") as log:
        log.write(line + "\n")
    subprocess.run([sys.executable, "-m", "edgeseg.cli", *arguments], check=True)


def run_pipeline(profile: Profile, name: str, data: Path, run_dir: Path) -> list:
    """Run the stages not finished yet; returns the outputs that already existed (skipped)."""
    from edgeseg.report.run_folder import Stage, write_manifest

    run_dir.mkdir(parents=True, exist_ok=True)
    r = lambda file: str(run_dir / file)  # noqa: E731
    size, device = ["--input-size", profile.input_size], ["--device", profile.device]
    user = dict(profile.user)
    steps = [("user.pt", ["train", "--arch", str(user.pop("arch")), "--data", str(data), "--out", r("user.pt"),
                          *size, *device, *profile.extra_train, "--no-tensorboard", *options(user)])]
    compressed = "user.pt"
    if profile.student:
        steps.append(("student.pt", ["distill", r("user.pt"), "--data", str(data), "--out", r("student.pt"), *size,
                                     *device, *profile.extra_train, "--no-tensorboard", *options(profile.student)]))
        compressed = "student.pt"
    steps += [
        ("pruned.pt", ["prune", r(compressed), "--out", r("pruned.pt"), "--data", str(data),
                       *options(profile.prune)]),
        ("user.onnx", ["export", r("user.pt"), "--out", r("user.onnx"), "--data", str(data)]),
        ("pruned.onnx", ["export", r("pruned.pt"), "--out", r("pruned.onnx"), "--data", str(data)]),
        ("pruned.int8.onnx", ["calibrate", r("pruned.onnx"), "--images", str(data / "train" / "images"),
                              "--data", str(data), *options(profile.calibrate)]),
    ]
    skipped = []
    for output, command in steps:
        if (run_dir / output).exists():
            print(f"{output} exists; skipping: {' '.join(command[:2])}")
            skipped.append(output)
            continue
        if command[0] in ("train", "distill") and (run_dir / f"{output}.state").exists():
            command = command + ["--resume"]  # a killed training run continues from its last epoch
        edgeseg(run_dir, command)
    engine = sorted(p.name for p in run_dir.glob("pruned.int8.*") if p.suffix == ".engine" or p.name.endswith(".ort.onnx"))
    if not engine:
        edgeseg(run_dir, ["build-engine", r("pruned.int8.onnx"), "--int8"])
        engine = sorted(p.name for p in run_dir.glob("pruned.int8.*")
                        if p.suffix == ".engine" or p.name.endswith(".ort.onnx"))
    backend = "TensorRT" if engine[0].endswith(".engine") else "ONNX Runtime"
    stages = [Stage("your model (PyTorch)", "user.pt"), Stage("your model (ONNX FP32)", "user.onnx")]
    if profile.student:
        stages.append(Stage("student, distilled (PyTorch)", "student.pt"))
    stages += [Stage("pruned + KD fine-tuned (PyTorch)", "pruned.pt"), Stage("pruned (ONNX FP32)", "pruned.onnx"),
               Stage(f"pruned INT8 ({backend} engine)", engine[0])]
    write_manifest(run_dir, f"CamVid: your model, made faster ({name} profile)", stages, data=str(data.resolve()),
                   notes=[f"Profile '{name}': training at {profile.input_size}; the commands are in commands.sh.",
                          f"Your model: {profile.user['arch']} trained with edgeseg train {options(user)}; "
                          + (f"student {profile.student['student']} distilled with {profile.student['loss']}; "
                             if profile.student else "")
                          + f"prune {profile.prune} (KD from the unpruned model); calibrate {profile.calibrate}."])
    return skipped


def check_targets(report_dir: Path, minutes: float) -> dict:
    from edgeseg.benchmark.report import paired_speedup

    stages = {s["stage"]: s for s in json.loads((report_dir / "report.json").read_text())["stages"]}
    user = stages["your model (PyTorch)"]
    user_onnx = stages["your model (ONNX FP32)"]
    twin = stages["pruned (ONNX FP32)"]
    final = list(stages.values())[-1]
    gap = round(user["miou"] - final["miou"], 2)
    paired = paired_speedup(user_onnx, twin)  # round by round: see edgeseg report's notes
    if paired is None:
        raise SystemExit(f"{report_dir / 'report.json'} has no latency for the two ONNX stages; run the report again.")
    median, lowest, highest = paired
    speedup = round(median, 2)
    return {"user_miou": user["miou"], "final_miou": final["miou"], "miou_gap": gap,
            "user_onnx_p50_ms": user_onnx["latency_ms"]["p50"], "pruned_onnx_p50_ms": twin["latency_ms"]["p50"],
            "final_p50_ms": final["latency_ms"]["p50"], "fp32_twin_speedup_vs_user_onnx": speedup,
            "fp32_twin_speedup_rounds": [round(lowest, 2), round(highest, 2)] if lowest is not None else None,
            "final_within_1_miou_of_user_model": gap <= TARGET_MIOU_GAP,
            "fp32_twin_at_least_2x_faster": speedup >= TARGET_SPEEDUP,
            "minutes": minutes, "within_150_minutes": minutes <= TARGET_MINUTES}


def require_trained_without(run_dir: Path, drive: str) -> Path:
    """The held-out split of a run whose stages were made on train-without-DRIVE (else they saw the drive)."""
    made_on = json.loads((run_dir / "stages.json").read_text()).get("data") or ""
    if Path(made_on).name != f"train-without-{drive}" or not (run_dir / "splits" / drive / "val").is_dir():
        raise SystemExit(f"{run_dir} was made on {made_on or 'unrecorded data'}, not on train-without-{drive}: its "
                         f"models saw drive {drive}; run without --from (or with another --out) to make a run "
                         f"that leaves it out.")
    return run_dir / "splits" / drive


def append_holdout_column(report_dir: Path, holdout_dir: Path, drive: str) -> None:
    """Add 'mIoU on val | on the unseen drive' per stage to the val report (report.md and report.json)."""
    from edgeseg.fileio import write_json_atomic, write_text_atomic

    document = json.loads((report_dir / "report.json").read_text())
    unseen = {s["stage"]: s["miou"] for s in json.loads((holdout_dir / "report.json").read_text())["stages"]}
    rows = ["", f"## mIoU on val and on drive {drive}, which training never saw", "",
            f"| stage | val mIoU % | {drive} mIoU % | {drive} change vs your model |", "|---|---:|---:|---:|"]
    first = unseen[document["stages"][0]["stage"]]
    for stage in document["stages"]:
        stage["miou_unseen_drive"] = unseen[stage["stage"]]
        rows.append(f"| {stage['stage']} | {stage['miou']:.2f} | {unseen[stage['stage']]:.2f} | "
                    f"{unseen[stage['stage']] - first:+.2f} |")
    document["unseen_drive"] = {"drive": drive, "report": str(holdout_dir / "report.json")}
    write_json_atomic(report_dir / "report.json", document)
    write_text_atomic(report_dir / "report.md", (report_dir / "report.md").read_text().rstrip("\n") + "\n"
                      + "\n".join(rows) + "\n")


def append_targets(report_dir: Path, targets: dict, minutes: float, scope: str, judged_on: str = "val") -> None:
    """Add the issue's targets to report.json and report.md (kept separate from `edgeseg report` itself)."""
    from edgeseg.fileio import write_json_atomic, write_text_atomic

    document = json.loads((report_dir / "report.json").read_text())
    document["targets"] = dict(targets, judged_on=judged_on)
    document["benchmark_minutes"] = minutes
    write_json_atomic(report_dir / "report.json", document)
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    low_high = targets.get("fp32_twin_speedup_rounds")
    rounds = f"; rounds ranged {low_high[0]:.2f}-{low_high[1]:.2f}x" if low_high else ""
    lines = ["", f"## Targets (judged on {judged_on})", "",
             f"- final INT8 model within {TARGET_MIOU_GAP} mIoU of your model: {targets['final_miou']:.2f} vs "
             f"{targets['user_miou']:.2f} (gap {targets['miou_gap']:+.2f}): "
             f"{verdict(targets['final_within_1_miou_of_user_model'])}",
             f"- its FP32 twin >= {TARGET_SPEEDUP}x faster than your model on ONNX Runtime CPU (same run): "
             f"{targets['user_onnx_p50_ms']:.2f} -> {targets['pruned_onnx_p50_ms']:.2f} ms p50 "
             f"({targets['fp32_twin_speedup_vs_user_onnx']:.2f}x, median over rounds{rounds}): "
             f"{verdict(targets['fp32_twin_at_least_2x_faster'])}; "
             f"the INT8 model itself: {targets['final_p50_ms']:.2f} ms p50 on this runtime (ONNX Runtime's CPU "
             f"kernels run Q/DQ slower than FP32 on CPUs without VNNI; INT8's speed-up belongs to TensorRT)",
             f"- this invocation of run.py took {minutes} min ({scope}): "
             f"{verdict(targets['within_150_minutes']) if 'every stage' in scope else 'not a whole run'}", ""]
    text = (report_dir / "report.md").read_text().rstrip("\n") + "\n" + "\n".join(lines)
    write_text_atomic(report_dir / "report.md", text)


def report_files(folder: Path) -> list:
    return list(folder.glob("report.*")) + list(folder.glob("*.png"))


def publish(run_dir: Path, report_dir: Path, profile: str, holdout_dir: Optional[Path] = None) -> None:
    """The report (and the unseen drive's, into a subfolder of its name) to benchmarks/results/camvid-<profile>/,
    the artifacts under MAX_PUBLISHED_MB to models/camvid/ with a card."""
    results = ROOT / "benchmarks" / "results" / f"camvid-{profile}"
    results.mkdir(parents=True, exist_ok=True)
    for path in report_files(report_dir) + [run_dir / "commands.sh"]:
        if path.is_file():
            shutil.copy2(path, results / path.name)
    if holdout_dir is not None:
        (results / holdout_dir.name).mkdir(exist_ok=True)
        for path in report_files(holdout_dir):
            shutil.copy2(path, results / holdout_dir.name / path.name)
    models = ROOT / "models" / "camvid"
    models.mkdir(parents=True, exist_ok=True)
    card = ["# CamVid models from benchmarks/camvid/run.py", "",
            f"Profile `{profile}`; commands in [commands.sh](../../benchmarks/results/camvid-{profile}/commands.sh); "
            f"report in [benchmarks/results/camvid-{profile}](../../benchmarks/results/camvid-{profile}/report.md).", "",
            "| file | MB | sha256 |", "|---|---:|---|"]
    for name in PUBLISHED_ARTIFACTS + tuple(p.name for p in run_dir.glob("pruned.int8.*.onnx")):
        path = run_dir / name
        if not path.is_file() or path.stat().st_size > MAX_PUBLISHED_MB * 1e6:
            continue
        for file in (path, path.with_name(path.name + ".json")):
            if file.is_file():
                shutil.copy2(file, models / file.name)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        card.append(f"| {name} | {path.stat().st_size / 1e6:.1f} | `{digest}` |")
    skipped = [p.name for p in run_dir.glob("*.pt") if p.stat().st_size > MAX_PUBLISHED_MB * 1e6]
    if skipped:
        card += ["", f"Not committed (over {MAX_PUBLISHED_MB} MB): {', '.join(sorted(skipped))}; rerun the script "
                 "to make them."]
    (models / "README.md").write_text("\n".join(card) + "\n")


if __name__ == "__main__":
    sys.exit(main())
