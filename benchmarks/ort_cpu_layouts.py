"""Two ONNX Runtime CPU choices edgeseg makes, measured: predict's streams and the demo's INT8 layout.

1. Streams (``predict --streams``): frames a second of LR-ASPP MobileNetV3-Large at 360x480
   (inference alone, untrained weights time like trained ones) from one session with every
   core against one single-threaded session per core, all running at once.
2. INT8 layout (``calibrate --quantize-outputs --asymmetric``, the demo's when its engine is
   ONNX Runtime's): latency and node count of the demo's U-Net (base 16, 96x128, pruned 50%
   and 60% with random weights) in FP32, with Q/DQ on op inputs only (TensorRT's layout, the
   default), with Q/DQ on outputs too, and with outputs + asymmetric (Relus folded).

Every timing alternates the candidates in rounds (benchmarks/common.py ``alternate``), with
ONNX Runtime's busy-waiting off, as predict runs it. Node counts are of the Q/DQ files as
written, before ONNX Runtime fuses them.
Run: python benchmarks/ort_cpu_layouts.py
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common import alternate, machine, median, untrained_checkpoint, write_results

LAYOUTS = {"inputs only (default, TensorRT's)": {},
           "--quantize-outputs": {"quantize_outputs": True},
           "--quantize-outputs --asymmetric": {"quantize_outputs": True, "symmetric": False}}


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # as predict runs them; and so that one session's idle workers do not busy-wait on the cores the
    # next candidate in the round is timed on
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def frames_per_second(sessions: list, batch: np.ndarray, frames: int) -> float:
    """``frames`` inferences shared by ``sessions``, each on its own thread; frames a second overall."""
    name = sessions[0].get_inputs()[0].name
    left = [frames]
    lock = threading.Lock()

    def work(one):
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            one.run(None, {name: batch})

    for one in sessions:
        one.run(None, {name: batch})
    threads = [threading.Thread(target=work, args=(one,)) for one in sessions]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return frames / (time.perf_counter() - started)


def streams_case(folder: Path, cores: int, rounds: int) -> dict:
    from edgeseg.exporting.api import export

    model = folder / "large.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        export(str(untrained_checkpoint(folder, 360, 480, 11)), str(model), verify_images=1)
    batch = np.random.default_rng(0).random((1, 3, 360, 480), dtype=np.float32)
    candidates = {f"1 session x {cores} threads": [session(model, cores)],
                  f"{cores} sessions x 1 thread": [session(model, 1) for _ in range(cores)]}
    fps = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, sessions in candidates.items():
            fps[name].append(frames_per_second(sessions, batch, 24))
    return {name: median(values) for name, values in fps.items()}


def layout_case(folder: Path, ratio: float, rounds: int) -> dict:
    import onnx

    from edgeseg.data.synthetic import SyntheticConfig, default_synthetic_root
    from edgeseg.exporting.api import export
    from edgeseg.pruning.api import prune
    from edgeseg.quant.api import calibrate

    data = default_synthetic_root(SyntheticConfig())
    tag = f"unet-p{int(ratio * 100)}"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        checkpoint = _unet_checkpoint(folder, tag)
        pruned = folder / f"{tag}.pruned.pt"
        prune(str(checkpoint), str(pruned), ratio=ratio)
        fp32 = folder / f"{tag}.onnx"
        export(str(pruned), str(fp32), verify_images=1)
        models = {"FP32": fp32}
        for index, (name, options) in enumerate(LAYOUTS.items()):
            out = folder / f"{tag}.l{index}.int8.onnx"
            calibrate(str(fp32), str(data / "train" / "images"), str(out), num=16, method="minmax", **options)
            models[name] = out
    sessions = {name: session(path, 2) for name, path in models.items()}
    batch = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    input_name = sessions["FP32"].get_inputs()[0].name
    timed = alternate({name: (lambda one=one: one.run(None, {input_name: batch})) for name, one in sessions.items()},
                      rounds=rounds, inner=20)
    return {name: {"p50_ms": median(timed[name]), "nodes": len(onnx.load(str(path)).graph.node),
                   "relu_nodes": sum(n.op_type == "Relu" for n in onnx.load(str(path)).graph.node)}
            for name, path in models.items()}


def _unet_checkpoint(folder: Path, tag: str) -> Path:
    """The demo's model shape (U-Net base 16, 8 classes, 96x128) with seeded random weights."""
    import torch

    from edgeseg.arch import create_model
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.spec import DatasetInfo, InputSpec

    torch.manual_seed(0)
    model = create_model("unet", 8, base_channels=16).eval()
    path = folder / f"{tag}.pt"
    save_checkpoint(path, model, arch="unet", num_classes=8, input_spec=InputSpec(96, 128),
                    dataset=DatasetInfo(8, ignore_index=255), arch_args={"base_channels": 16})
    return path


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    folder = Path(tempfile.mkdtemp(prefix="edgeseg-ort-layouts-"))
    load_before = os.getloadavg()[0]
    streams = streams_case(folder, cores, args.rounds)
    layouts = {ratio: layout_case(folder, ratio, args.rounds) for ratio in (0.5, 0.6)}
    document = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "rounds": args.rounds,
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "streams_fps": streams, "int8_layouts": {str(r): v for r, v in layouts.items()}}
    write_results("ort_cpu_layouts", document, render(document))


def render(document: dict) -> str:
    lines = ["# ONNX Runtime on a CPU: predict's streams and the demo's INT8 layout", "",
             f"{document['machine']['cpu']}, {document['machine']['cores']} cores, {document['date']}, medians of "
             f"{document['rounds']} interleaved rounds; load average before / after: "
             f"{document['load_average_1min'][0]} / {document['load_average_1min'][1]}.", "",
             "## Streams: LR-ASPP MobileNetV3-Large 360x480, inference alone", "",
             "| sessions | frames a second |", "|---|---:|"]
    lines += [f"| {name} | {fps:.1f} |" for name, fps in document["streams_fps"].items()]
    lines += ["", "## INT8 layouts: the demo's U-Net (base 16, 96x128), random weights, 2 threads", "",
              "| pruned | model | nodes | Relu nodes | p50 ms |", "|---|---|---:|---:|---:|"]
    for ratio, models in document["int8_layouts"].items():
        for name, row in models.items():
            lines.append(f"| {float(ratio):.0%} | {name} | {row['nodes']} | {row['relu_nodes']} | {row['p50_ms']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
