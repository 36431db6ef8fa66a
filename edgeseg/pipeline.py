"""``edgeseg demo``: the whole pipeline on the synthetic street scenes, with a stage-by-stage report.

Each stage calls the same public function as its CLI verb, so the demo is also the
proof that the stages hand their artifacts to each other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgeseg.console import say
from edgeseg.data.synthetic import SyntheticConfig, default_synthetic_root


@dataclass(frozen=True)
class DemoRecipe:
    """Settings of the demo: the CamVid story (benchmarks/camvid/run.py) in miniature.

    A user's model (a U-Net, trained as a user would) is made faster the way that keeps
    its accuracy on these scenes: half of its channels pruned with 20 epochs of knowledge
    distillation from the unpruned model, then INT8 (the README has the measured table).
    Half, not 60%: 60% (6/12/25/51/102 channels) kept 66.90 mIoU, but its INT8 latency was
    within this machine's noise of half's (benchmarks/results/ort_cpu_layouts.md), while half
    keeps 8/16/32/64/128 channels, the widths SIMD kernels like. The earlier recipe, a separately
    distilled LR-ASPP MobileNetV3 student (25 epochs), lost 4.7 mIoU and pruning that
    student 0.4 another 5.6. The defaults finish in about five minutes on 2 CPU cores.

    The cross-entropy is weighted by the square root of median frequency balancing (train's
    --class-weights; prune's taylor ranking and fine-tuning inherit it): with plain cross-entropy
    the model found no pole and no pedestrian (0.0 IoU in every stage); with it, your model found
    pedestrians at 68 IoU and poles at 39 (12 epochs, measured once) on the same scenes, but half
    of the U-Net could not resolve 1-3 px poles at 96x128 (6.0 IoU after pruning). The demo's
    scenes (style 2) draw poles at least 2.5 px wide and pedestrians nearer.
    """

    data: SyntheticConfig = SyntheticConfig(scene_style=2)
    model_arch: str = "unet"
    model_args: dict = field(default_factory=lambda: {"base_channels": 16})
    model_epochs: int = 12
    class_weights: str = "sqrt-median-frequency"
    prune_ratio: float = 0.5
    prune_importance: str = "taylor"
    finetune_epochs: int = 20
    batch_size: int = 8
    calibration_images: int = 100
    calibration_method: str = "auto"
    # ONNX Runtime's CPU layout: Q/DQ on conv outputs too, asymmetric, each Relu folded into its
    # conv, so the U-Net runs as a chain of QLinearConvs (benchmarks/results/ort_cpu_layouts.md).
    # TensorRT wants symmetric Q/DQ on inputs only: None means ONNX Runtime's layout only when
    # the engine will be ONNX Runtime's.
    onnxruntime_layout: Optional[bool] = None
    bench_rounds: int = 10  # `edgeseg report`'s own defaults: 100 timed calls per stage, a few seconds here
    bench_iters: int = 10
    mask_images: int = 4

    @classmethod
    def fast(cls) -> "DemoRecipe":
        """One epoch per stage on a few 64x64 images: checks the path, not the accuracy."""
        return cls(data=SyntheticConfig(num_train=16, num_val=8, height=64, width=64, scene_style=2),
                   model_args={"base_channels": 8, "encoder_depth": 3}, model_epochs=1, finetune_epochs=1,
                   batch_size=4, calibration_images=8, bench_rounds=2, bench_iters=2, mask_images=2)


def demo(out: str = "runs/demo", *, fast: bool = False, seed: int = 0, recipe: DemoRecipe = None) -> dict:
    """Run train -> prune (KD fine-tuning) -> export -> calibrate -> build-engine; write the report.

    >>> edgeseg.demo("runs/demo")  # doctest: +SKIP
    """
    from edgeseg.engine.api import build_engine, tensorrt_available
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

    say("[bold]1/5 train your model[/bold]")
    train(recipe.model_arch, data, str(folder / "model.pt"), epochs=recipe.model_epochs,
          arch_args=recipe.model_args, class_weights=recipe.class_weights, **common)
    say("[bold]2/5 prune it, fine-tuning with distillation from the unpruned model[/bold]")
    prune(str(folder / "model.pt"), str(folder / "pruned.pt"), ratio=recipe.prune_ratio,
          importance=recipe.prune_importance, finetune_epochs=recipe.finetune_epochs, data=data, **common)
    say("[bold]3/5 export to ONNX[/bold]")
    export(str(folder / "pruned.pt"), str(folder / "pruned.onnx"), data=data)
    say("[bold]4/5 calibrate INT8[/bold]")
    onnxruntime_layout = recipe.onnxruntime_layout
    if onnxruntime_layout is None:
        onnxruntime_layout = not tensorrt_available()[0]
    calibrate(str(folder / "pruned.onnx"), str(Path(data) / "train" / "images"), method=recipe.calibration_method,
              num=recipe.calibration_images, seed=seed, quantize_outputs=onnxruntime_layout,
              symmetric=not onnxruntime_layout)
    say("[bold]5/5 build the engine[/bold]")
    # the asymmetric ONNX Runtime layout is for ONNX Runtime only: TensorRT refuses it
    engine = build_engine(str(folder / "pruned.int8.onnx"), int8=True,
                          backend="onnxruntime" if onnxruntime_layout else "auto")

    say("[bold]report: every stage measured alike[/bold]")
    stages = [Stage("your model", "model.pt"), Stage("pruned + KD fine-tuned", "pruned.pt"),
              Stage("ONNX FP32", "pruned.onnx"),
              Stage(f"engine INT8 ({engine['engine']['backend']})", engine["artifact"])]
    minutes = (time.perf_counter() - started) / 60
    write_manifest(folder, "edgeseg demo: synthetic street scenes", stages, data=data,
                   notes=[f"Recipe: {'fast' if fast else 'default'}; pipeline time {minutes:.1f} min."])
    document = report(str(folder), rounds=recipe.bench_rounds, iters_per_round=recipe.bench_iters,
                      mask_images=recipe.mask_images)
    say(f"Wrote {folder / 'report.json'} and {folder / 'report.md'} ({(time.perf_counter() - started) / 60:.1f} min)")
    return document
