import click


@click.command("build-engine")
@click.argument("model")
@click.option("--out", default=None, help="Engine (or ONNX Runtime artifact) to write.")
@click.option("--int8/--no-int8", default=False, show_default=True, help="INT8 (from the calibration edgeseg wrote).")
@click.option("--fp16/--no-fp16", default=False, show_default=True)
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto", show_default=True)
@click.option("--max-batch", type=int, default=8, show_default=True)
@click.option("--workspace-mb", type=int, default=2048, show_default=True)
def build_engine_command(model, **options):
    """Build a TensorRT engine, or the ONNX Runtime artifact where TensorRT is absent.

    Example: edgeseg build-engine pruned.onnx --int8
    """
    from edgeseg.engine.api import build_engine

    build_engine(model, **options)
