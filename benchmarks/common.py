"""Helpers the benchmark scripts share: alternating timing, machine facts, writing results."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / "cache"
# The CamVid student the INT8 and pruning benchmarks start from (trained once, cached, git-ignored).
STUDENT_RECIPE = {"arch": "mobilenetv3", "input_size": "180x240", "epochs": 25}


def add_camvid_argument(parser) -> None:
    """The --data option every CamVid benchmark takes (the shared copy next to the repository by default)."""
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"),
                        help="CamVid folder with train/ and val/.")


def require_camvid(data: str) -> Path:
    """``data`` as a Path, or exit with one sentence when it holds no CamVid val split."""
    path = Path(data)
    if not (path / "val" / "images").is_dir():
        raise SystemExit(f"CamVid is not at {path}; pass --data DIR (a folder with train/ and val/).")
    return path


def camvid_student(data: Path) -> Path:
    """LR-ASPP MobileNetV3-Large trained by `edgeseg train` on CamVid (~25 min on 2 cores the first time)."""
    from edgeseg.training.api import train

    CACHE.mkdir(exist_ok=True)
    checkpoint = CACHE / "camvid-mobilenetv3.pt"
    if not checkpoint.exists():
        train(STUDENT_RECIPE["arch"], str(data), str(checkpoint), epochs=STUDENT_RECIPE["epochs"],
              input_size=STUDENT_RECIPE["input_size"])
    return checkpoint


def untrained_checkpoint(folder: Path, height: int, width: int, classes: int, arch: str = "mobilenetv3") -> Path:
    """``folder/model.pt``: an edgeseg checkpoint of ``arch`` with seeded random weights.

    For speed benchmarks: untrained weights time exactly like trained ones.
    """
    import torch

    from edgeseg.arch import create_model
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.spec import DatasetInfo, InputSpec

    torch.manual_seed(0)
    model = create_model(arch, classes).eval()
    checkpoint = folder / "model.pt"
    save_checkpoint(checkpoint, model, arch=arch, num_classes=classes, input_spec=InputSpec(height, width),
                    dataset=DatasetInfo(classes, ignore_index=255))
    return checkpoint


def machine() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "numpy": np.__version__}


def alternate(candidates: Dict[str, Callable[[], object]], rounds: int, inner: int = 1) -> Dict[str, List[float]]:
    """Time each candidate ``rounds`` times, interleaved so machine noise hits all of them alike (ms per call)."""
    samples: Dict[str, List[float]] = {name: [] for name in candidates}
    for function in candidates.values():
        function()  # warm-up
    for _ in range(rounds):
        for name, function in candidates.items():
            started = time.perf_counter()
            for _ in range(inner):
                function()
            samples[name].append((time.perf_counter() - started) * 1e3 / inner)
    return samples


def make_once(output: Path, make: Callable[[], object]) -> Optional[float]:
    """Run ``make`` unless ``output`` exists (an earlier sitting made it): its seconds, or None when it was kept.

    The long benchmarks (a family table, QAT recipes) stop and continue across sittings; what an earlier
    sitting made is reused, and its time is unknown rather than a misleading near-zero.
    """
    if output.exists():
        return None
    started = time.perf_counter()
    make()
    return round(time.perf_counter() - started, 1)


def median(values: List[float]) -> float:
    return round(float(np.median(values)), 4)


def write_results(name: str, document: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
