"""The recipes of benchmarks/camvid/run.py: one per machine class, as plain data.

``cpu`` took 69 minutes on a 2-core machine (the budget is 2 hours) by training at half resolution
(mIoU is still measured at the labels' native 360x480); ``gpu`` is the full-resolution
recipe; ``smoke`` checks the chain in a minute on tiny synthetic data (the test suite runs it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass(frozen=True)
class Profile:
    input_size: str
    teacher: Dict[str, object]
    student: Dict[str, object]
    prune: Dict[str, object]
    calibrate: Dict[str, object]
    report: Dict[str, object]
    device: str = "cpu"
    extra_train: List[str] = field(default_factory=list)


# the losses and weights are the distill benchmark's winner (CWD)
DISTILL = {"student": "mobilenetv3", "loss": "cwd", "temperature": 4.0, "loss-weight": "cwd=3.0", "optimizer": "adamw",
           "lr": 0.001, "batch-size": 8, "seed": 0}

PROFILES = {
    # The teacher is a U-Net: its dense full-resolution convolutions take 112.5 ms on ONNX Runtime at
    # 180x240 (28.7x the pruned student's 3.92 ms in the committed run) and about 3.3 min an epoch to train
    # on 2 cores, so ten epochs fit the 2-hour budget. DeepLabV3-ResNet50 (230 ms) would cost about
    # 9 min an epoch (both timed by hand when choosing); the DeepLabV3-MobileNetV3 teacher of the first
    # run was only 1.4x slower than the INT8 engine.
    "cpu": Profile(
        input_size="180x240",
        teacher={"arch": "unet", "epochs": 10, "optimizer": "adamw", "lr": 0.001, "batch-size": 8, "seed": 0},
        student={**DISTILL, "epochs": 10},
        # 30 KD epochs: at 0.4, 30/60 epochs recover to within 2.6/0.5 mIoU (benchmarks/results/prune_recovery.md)
        prune={"ratio": 0.3, "importance": "taylor", "round-to": 8, "finetune-epochs": 30, "lr": 0.0005,
               "batch-size": 8, "seed": 0},
        calibrate={"num": 200, "max-miou-drop": 0.5, "seed": 0},
        report={"rounds": 10, "iters": 10, "masks": 4},
    ),
    # the same U-Net teacher as `cpu` (the one with enough latency headroom), 120 epochs at full resolution
    "gpu": Profile(
        input_size="360x480",
        teacher={"arch": "unet", "epochs": 120, "optimizer": "adamw", "lr": 0.001, "batch-size": 16, "seed": 0},
        student={**DISTILL, "epochs": 120, "batch-size": 16},
        prune={"ratio": 0.3, "importance": "taylor", "round-to": 8, "finetune-epochs": 40, "lr": 0.0005,
               "batch-size": 16, "seed": 0},
        calibrate={"num": 367, "max-miou-drop": 0.5, "seed": 0, "device": "cuda"},
        # the report times every stage on ONNX Runtime CPU: 1.4 s a call for the teacher at 360x480
        report={"rounds": 10, "iters": 10, "masks": 4},
        device="cuda",
        extra_train=["--amp"],
    ),
    "smoke": Profile(
        input_size="64x64",
        teacher={"arch": "unet", "arch-arg": "base_channels=8", "epochs": 1, "batch-size": 4, "seed": 0},
        student={"student": "mobilenetv3-small", "loss": "cwd", "epochs": 1, "batch-size": 4, "seed": 0},
        prune={"ratio": 0.3, "importance": "magnitude", "finetune-epochs": 1, "batch-size": 4, "seed": 0},
        calibrate={"num": 8, "max-miou-drop": 100.0, "seed": 0},
        report={"rounds": 2, "iters": 2, "masks": 2},
    ),
}
