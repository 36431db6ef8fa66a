import click

from edgeseg.cli.options import (engine_dla_core, measured_ignore_index, model_facts_options, pop_model_facts,
                                 threads, trust_checkpoint, trust_engine)

_device = click.option("--device", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)


@click.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--data", default=None, help="Labelled data for mIoU (its val split; classes: its dataset.yaml, else "
              "the first model's) [default: timing only].")
@measured_ignore_index
@click.option("--json", "json_out", default=None, help="Write the results as JSON.")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--warmup-ms", type=float, default=0.0, show_default=True, help="Also warm up for at least this long.")
@click.option("--iters", type=int, default=50, show_default=True)
@click.option("--duration", type=float, default=0.0, help="Time for this many seconds instead of --iters.")
@click.option("--power/--no-power", default=False, show_default=True,
              help="On Jetson: sample tegrastats; report average W and mJ per frame.")
@click.option("--batch", "batch_size", type=int, default=1, show_default=True)
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.option("--min-miou", type=float, default=None, help="Exit non-zero when mIoU falls below this.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default=None,
              help="PyTorch checkpoints only: fp16 runs them under CUDA FP16 autocast (needs --device cuda); ONNX "
                   "and engine files keep the precision they were built with [default: the checkpoint's, FP32].")
@_device
@threads
@trust_checkpoint
@trust_engine
@engine_dla_core
@model_facts_options
def bench_command(models, **options):
    """Latency (mean, p50, p90, p99), FPS and mIoU of one or more artifacts, in one table.

    Example: edgeseg bench student.pt pruned.onnx pruned.int8.onnx --data camvid/
    """
    from edgeseg.benchmark.api import bench

    bench(list(models), facts=pop_model_facts(options), **options)


@click.command("eval")
@click.argument("model")
@click.option("--data", required=True, help="Labelled data (its val split; classes: its dataset.yaml, else the "
              "model's).")
@measured_ignore_index
@click.option("--json", "json_out", default=None, help="Write the results as JSON.")
@click.option("--max-images", type=int, default=None)
@click.option("--min-miou", type=float, default=None, help="Exit non-zero when mIoU falls below this.")
@_device
@threads
@trust_checkpoint
@trust_engine
@engine_dla_core
@model_facts_options
def eval_command(model, **options):
    """mIoU and per-class IoU over a whole split (no timing).

    Example: edgeseg eval pruned.int8.onnx --data camvid/
    """
    from edgeseg.benchmark.api import eval as evaluate

    evaluate(model, facts=pop_model_facts(options), **options)
