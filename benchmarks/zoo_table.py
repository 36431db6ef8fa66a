"""The architecture table of the manual: every registered family through every stage, with its cost.

For each registered architecture: the pipeline chain at 64x64 on a tiny synthetic set
(train one epoch, distill as student and as teacher, prune 30%, export with the
>= 99.9% argmax check, calibrate INT8, bench in ONNX Runtime), each stage marked
pass/fail; then parameters, MACs and ONNX Runtime CPU latency (median of interleaved
runs) at CamVid's 360x480. Writes results/zoo.{json,md}, which the manual's architectures
guide includes as it is.

Run: python benchmarks/zoo_table.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from common import RESULTS, alternate, machine, median, write_results

STAGES = ("train", "distill (student)", "distill (teacher)", "prune 30%", "export", "calibrate INT8", "bench (ORT)")
HEIGHT, WIDTH = 360, 480


def run_chain(name: str, data: Path, teacher: Path, folder: Path) -> dict:
    """Stage -> True/False (and the first error), stopping at the first failure."""
    from edgeseg.benchmark.api import bench
    from edgeseg.distillation.api import distill
    from edgeseg.exporting.api import export
    from edgeseg.pruning.api import prune
    from edgeseg.quant.api import calibrate
    from edgeseg.training.api import train

    model, pruned, onnx_path = folder / "m.pt", folder / "p.pt", folder / "p.onnx"
    steps = [
        lambda: train(name, str(data), str(model), epochs=1, batch_size=4, tensorboard=False),
        lambda: distill(str(teacher), str(data), str(folder / "s.pt"), student=name, epochs=1, batch_size=4,
                        tensorboard=False),
        lambda: distill(str(model), str(data), str(folder / "t.pt"), student="mobilenetv3-small", epochs=1,
                        batch_size=4, tensorboard=False),
        lambda: prune(str(model), str(pruned), ratio=0.3),
        lambda: export(str(pruned), str(onnx_path), data=str(data)),
        lambda: calibrate(str(onnx_path), str(data / "train" / "images"), num=8),
        lambda: bench([str(onnx_path), str(onnx_path.with_name("p.int8.onnx"))], data=str(data), iters=2, show=False),
    ]
    result = {}
    for stage, step in zip(STAGES, steps):
        try:
            step()
            result[stage] = True
        except Exception as exc:  # the table reports the failure instead of stopping the whole survey
            result[stage] = False
            result["error"] = f"{stage}: {type(exc).__name__}: {exc}"[:300]
            break
    return result


def latencies(names, rounds: int) -> dict:
    import numpy as np

    from edgeseg.arch import create_model
    from edgeseg.exporting.api import export_onnx
    from edgeseg.runtime.onnxruntime_runner import OnnxRuntimeRunner

    with tempfile.TemporaryDirectory() as folder:
        runners = {}
        for name in names:
            path = Path(folder) / f"{len(runners)}.onnx"
            export_onnx(create_model(name, 11).eval(), path, HEIGHT, WIDTH, opset=17)
            runners[name] = OnnxRuntimeRunner(str(path), (3, HEIGHT, WIDTH)).activate()
        batch = np.random.default_rng(0).standard_normal((1, 3, HEIGHT, WIDTH)).astype(np.float32)
        samples = alternate({n: (lambda r=r: r.infer(batch)) for n, r in runners.items()}, rounds)
        for runner in runners.values():
            runner.deactivate()
    return {name: median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved latency rounds per architecture.")
    parser.add_argument("--latency-only", action="store_true",
                        help="Keep the stage results of results/zoo.json; measure the latencies again (on a quiet machine).")
    args = parser.parse_args()
    if args.latency_only:
        import json

        document = json.loads((RESULTS / "zoo.json").read_text())
        started = time.perf_counter()
        for name, ms in latencies(list(document["rows"]), args.rounds).items():
            document["rows"][name]["latency_ms"] = ms
        document.update(machine=machine(), latency_rounds=args.rounds,
                        latency_minutes=round((time.perf_counter() - started) / 60, 1))
        publish(document)
        return

    from edgeseg.arch import create_model, list_models
    from edgeseg.arch.profile import count_macs, count_params
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset
    from edgeseg.training.api import train

    started = time.perf_counter()
    entries = list_models()
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = write_dataset(folder / "data", SyntheticConfig(seed=3, num_train=8, num_val=4, height=64, width=64))
        teacher = folder / "teacher.pt"
        train("unet", str(data), str(teacher), epochs=1, batch_size=4, arch_args={"base_channels": 8},
              tensorboard=False)
        for entry in entries:
            work = folder / entry.name
            work.mkdir()
            model = create_model(entry.name, 11).eval()
            rows[entry.name] = {"summary": entry.summary, "params": count_params(model),
                                "macs": count_macs(model, HEIGHT, WIDTH), "stages": run_chain(entry.name, data,
                                                                                              teacher, work)}
            print(entry.name, rows[entry.name]["stages"], flush=True)
    for name, ms in latencies([e.name for e in entries], args.rounds).items():
        rows[name]["latency_ms"] = ms
    document = {"machine": machine(), "input": [HEIGHT, WIDTH], "latency_rounds": args.rounds, "rows": rows,
                "minutes": round((time.perf_counter() - started) / 60, 1)}
    publish(document)


def publish(document: dict) -> None:
    """results/zoo.{json,md} (docs/guides/architectures.md includes the Markdown)."""
    table = markdown_table(document["rows"])
    write_results("zoo", document, f"# Architectures through every stage\n\n{table}\n")


def markdown_table(rows: dict) -> str:
    cores = machine()["cores"]
    lines = ["| architecture | " + " | ".join(STAGES) + f" | params (M) | GMACs {HEIGHT}x{WIDTH} | "
             f"ORT CPU ms ({cores} cores) |", "|---|" + "---|" * len(STAGES) + "---:|---:|---:|"]
    for name, row in rows.items():
        marks = " | ".join("✓" if row["stages"].get(s) else "✗" for s in STAGES)
        lines.append(f"| `{name}` | {marks} | {row['params'] / 1e6:.2f} | {row['macs'] / 1e9:.2f} | "
                     f"{row.get('latency_ms', float('nan')):.1f} |")
    failures = [f"- `{n}`: {r['stages']['error']}" for n, r in rows.items() if "error" in r["stages"]]
    return "\n".join(lines + ([""] + failures if failures else [])) + "\n"


if __name__ == "__main__":
    main()
