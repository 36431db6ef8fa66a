"""The PyTorch runner on a CUDA GPU: FP32, FP16 and CUDA graphs at CamVid's and Cityscapes' sizes, and both
output forms (logits vs class map).

Run by `device_check.sh` on a lent GPU machine (no data travels there: the models are
LR-ASPP MobileNetV3-Large with seeded random weights, which time exactly like trained ones).
Every configuration is measured through the same Runner contract `edgeseg bench` uses:
host latency (copies included) and compute latency (CUDA events around the model), p50
over `--iters` calls after warm-up, interleaved in rounds so the configurations share the
GPU's clock and thermal state. Writes cuda_runner.json and cuda_runner.md to --out.

    python3 benchmarks/cuda_runner.py --out runs/device              # on the GPU machine
    python3 benchmarks/cuda_runner.py --device cpu --sizes 64x64:4 --iters 3 --out /tmp/x  # a smoke run
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import untrained_checkpoint  # noqa: E402  (benchmarks/common.py, beside this script)

DEFAULT_SIZES = ("360x480:11", "1024x2048:19")  # CamVid (11 classes), Cityscapes (19 classes)
CONFIGS = (("fp32", False), ("fp32", True), ("fp16", False), ("fp16", True))  # (precision, CUDA graphs)


def measure(path: Path, shape, device: str, iters: int, rounds: int) -> list:
    from edgeseg.runtime.torch_runner import TorchRunner

    batch = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    runners = {config: TorchRunner(str(path), shape, precision=config[0], device=device, cuda_graphs=config[1])
               for config in CONFIGS}
    samples = {config: ([], []) for config in CONFIGS}
    try:
        for runner in runners.values():
            runner.activate()
            for _ in range(10):  # warm-up: cuDNN autotuning, graph capture
                runner.infer(batch)
        reference = runners[("fp32", False)].infer(batch).argmax(1)
        agreement = {config: float((runner.infer(batch).argmax(1) == reference).mean())
                     for config, runner in runners.items()}
        for _ in range(rounds):  # interleaved: every configuration sees the same GPU state
            for config, runner in runners.items():
                for _ in range(iters):
                    runner.infer(batch)
                    samples[config][0].append(runner.last_inference_ms)
                    samples[config][1].append(runner.last_compute_ms)
        peak = {config: runner.peak_device_memory_mb() for config, runner in runners.items()}
    finally:
        for runner in runners.values():
            runner.deactivate()
    rows = []
    for (precision, graphs), (host, compute) in samples.items():
        compute = [c for c in compute if c is not None]
        rows.append({"precision": precision, "cuda_graphs": graphs, "host_p50_ms": round(statistics.median(host), 3),
                     "compute_p50_ms": round(statistics.median(compute), 3) if compute else None,
                     "fps": round(1000 / statistics.median(host), 1), "calls": len(host),
                     "argmax_agreement_with_fp32": round(agreement[(precision, graphs)], 5),
                     "peak_device_memory_mb": peak[(precision, graphs)]})
    return rows


def output_forms(path: Path, shape, device: str, iters: int, rounds: int) -> dict:
    """Per frame, FP16: logits copied to the host and argmaxed there (edgeseg's C core) vs the argmax on the GPU
    and a uint8 class map copied (what `export --argmax` puts in the graph), interleaved."""
    import time

    import torch

    from edgeseg.checkpoint import load_model
    from edgeseg.runtime.native import argmax

    model = load_model(path).model.eval().to(device)
    x = torch.randn((1, *shape), device=device)
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=device != "cpu")

    def logits():
        with torch.inference_mode(), autocast:
            out = model(x)
        return argmax((out["out"] if isinstance(out, dict) else out).float().cpu().numpy())

    def class_map():
        with torch.inference_mode(), autocast:
            out = model(x)
        return (out["out"] if isinstance(out, dict) else out).argmax(1).to(torch.uint8).cpu().numpy()

    forms = {"logits + host argmax": logits, "class map (argmax on the device)": class_map}
    times = {name: [] for name in forms}
    for fn in forms.values():
        for _ in range(5):
            fn()
    for _ in range(rounds):
        for name, fn in forms.items():
            for _ in range(iters):
                if device != "cpu":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - started) * 1e3)
    return {name: round(statistics.median(samples), 3) for name, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="HxW:CLASSES")
    parser.add_argument("--iters", type=int, default=50, help="calls per configuration per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu"
    results = {"device": gpu, "torch": torch.__version__, "model": "lraspp-mobilenetv3-large", "batch": 1,
               "iters_per_round": args.iters, "rounds": args.rounds, "sizes": []}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            hw, _, classes = size.partition(":")
            height, width = (int(v) for v in hw.split("x"))
            path = untrained_checkpoint(Path(folder), height, width, int(classes or 11))
            rows = measure(path, (3, height, width), args.device, args.iters, args.rounds)
            forms = output_forms(path, (3, height, width), args.device, args.iters, args.rounds)
            print(json.dumps({"size": size, "rows": rows, "output_forms_p50_ms": forms}), flush=True)
            results["sizes"].append({"height": height, "width": width, "classes": int(classes or 11), "rows": rows,
                                     "output_forms_p50_ms": forms})
    (out / "cuda_runner.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# PyTorch runner on {gpu} (torch {torch.__version__}), LR-ASPP MobileNetV3-Large, batch 1", "",
             "| input | classes | precision | CUDA graphs | host p50 ms | compute p50 ms | FPS | argmax = FP32 | "
             "peak MB |", "|---|---|---|---|---|---|---|---|---|"]
    for size in results["sizes"]:
        for row in size["rows"]:
            lines.append(f"| {size['height']}x{size['width']} | {size['classes']} | {row['precision']} | "
                         f"{'yes' if row['cuda_graphs'] else 'no'} | {row['host_p50_ms']} | {row['compute_p50_ms']} | "
                         f"{row['fps']} | {100 * row['argmax_agreement_with_fp32']:.2f}% | "
                         f"{row['peak_device_memory_mb']} |")
    lines += ["", "Per frame, FP16, wall clock p50 (ms): the logits copied and argmaxed on the host vs the class map "
              "made on the device (`export --argmax`)", "", "| input | classes | logits + host argmax | class map |",
              "|---|---|---|---|"]
    for size in results["sizes"]:
        forms = size["output_forms_p50_ms"]
        lines.append(f"| {size['height']}x{size['width']} | {size['classes']} | {forms['logits + host argmax']} | "
                     f"{forms['class map (argmax on the device)']} |")
    (out / "cuda_runner.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
