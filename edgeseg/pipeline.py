"""``edgeseg demo``: the whole pipeline on the synthetic street scenes, with a stage-by-stage report.

Each stage calls the same public function as its CLI verb, so the demo is also the
proof that the stages hand their artifacts to each other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.console import say
from edgeseg.data.synthetic import SyntheticConfig, default_synthetic_root


@dataclass(frozen=True)
class DemoRecipe:
    """Settings of the demo; the defaults finish in under 10 minutes on 2 CPU cores."""

    data: SyntheticConfig = SyntheticConfig()
    teacher_arch: str = "unet"
    teacher_args: dict = field(default_factory=lambda: {"base_channels": 16})
    teacher_epochs: int = 12
    student_arch: str = "mobilenetv3"
    student_epochs: int = 25
    prune_ratio: float = 0.4
    finetune_epochs: int = 8
    batch_size: int = 8
    calibration_images: int = 100
    calibration_method: str = "auto"
    bench_rounds: int = 6
    bench_iters: int = 5
    mask_images: int = 4

    @classmethod
    def fast(cls) -> "DemoRecipe":
        """One epoch per stage on a few 64x64 images: checks the path, not the accuracy."""
        return cls(data=SyntheticConfig(num_train=16, num_val=8, height=64, width=64),
                   teacher_args={"base_channels": 8, "encoder_depth": 3}, teacher_epochs=1,
                   student_arch="mobilenetv3-small", student_epochs=1, finetune_epochs=1, batch_size=4,
                   calibration_images=8, bench_rounds=2, bench_iters=2, mask_images=2)


def demo(out: str = "runs/demo", *, fast: bool = False, seed: int = 0, recipe: DemoRecipe = None) -> dict:
    """Run train -> distill -> prune -> export -> calibrate -> build-engine -> bench; write the report.

    >>> edgeseg.demo("runs/demo")  # doctest: +SKIP
    """
    from edgeseg.distillation.api import distill
    from edgeseg.engine.api import build_engine
    from edgeseg.exporting.api import export
    from edgeseg.pruning.api import prune
    from edgeseg.quant.api import calibrate
    from edgeseg.report.api import report
    from edgeseg.report.run_folder import Stage, write_manifest
    from edgeseg.training.api import train

    recipe = recipe or (DemoRecipe.fast() if fast else DemoRecipe())
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = str(default_synthetic_root(recipe.data))
    say(f"[bold]edgeseg demo[/bold]: synthetic street scenes in {data}")
    common = {"batch_size": recipe.batch_size, "seed": seed}

    say("[bold]1/6 train the teacher[/bold]")
    train(recipe.teacher_arch, data, str(folder / "teacher.pt"), epochs=recipe.teacher_epochs,
          arch_args=recipe.teacher_args, **common)
    say("[bold]2/6 distill the student[/bold]")
    distill(str(folder / "teacher.pt"), data, str(folder / "student.pt"), student=recipe.student_arch,
            epochs=recipe.student_epochs, **common)
    say("[bold]3/6 prune and fine-tune[/bold]")
    prune(str(folder / "student.pt"), str(folder / "pruned.pt"), ratio=recipe.prune_ratio,
          finetune_epochs=recipe.finetune_epochs, data=data, **common)
    say("[bold]4/6 export to ONNX[/bold]")
    export(str(folder / "pruned.pt"), str(folder / "pruned.onnx"), data=data)
    say("[bold]5/6 calibrate INT8[/bold]")
    calibrate(str(folder / "pruned.onnx"), str(Path(data) / "train" / "images"), method=recipe.calibration_method,
              num=recipe.calibration_images, seed=seed)
    say("[bold]6/6 build the engine[/bold]")
    engine = build_engine(str(folder / "pruned.int8.onnx"), int8=True)

    say("[bold]report: every stage measured alike[/bold]")
    stages = [Stage("teacher", "teacher.pt"), Stage("student (distilled)", "student.pt"),
              Stage("pruned + fine-tuned", "pruned.pt"), Stage("ONNX FP32", "pruned.onnx"),
              Stage(f"engine INT8 ({engine['engine']['backend']})", engine["artifact"])]
    minutes = (time.perf_counter() - started) / 60
    write_manifest(folder, "edgeseg demo: synthetic street scenes", stages, data=data,
                   notes=[f"Recipe: {'fast' if fast else 'default'}; pipeline time {minutes:.1f} min."])
    document = report(str(folder), rounds=recipe.bench_rounds, iters_per_round=recipe.bench_iters,
                      mask_images=recipe.mask_images)
    say(f"Wrote {folder / 'report.json'} and {folder / 'report.md'} ({(time.perf_counter() - started) / 60:.1f} min)")
    return document
