import click


@click.command("calibrate")
@click.argument("model")
@click.option("--images", required=True, help="Folder of calibration images (or a dataset folder, or 'synthetic').")
@click.option("--out", default=None, help="Q/DQ ONNX to write [default: MODEL.int8.onnx].")
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy", "mse"]), default="percentile",
              show_default=True)
@click.option("--percentile", type=float, default=99.99, show_default=True)
@click.option("--num", type=int, default=500, show_default=True, help="Images to use (all if fewer).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the image selection.")
@click.option("--symmetric/--asymmetric", default=True, show_default=True, help="Activation quantisation.")
def calibrate_command(model, images, **options):
    """Collect INT8 ranges; write a Q/DQ ONNX, a TensorRT calibration cache and the ranges.

    Example: edgeseg calibrate pruned.onnx --images calibration/
    """
    from edgeseg.quant.api import calibrate

    calibrate(model, images, **options)
