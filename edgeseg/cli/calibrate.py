import click

from edgeseg.cli.options import ignore_index, model_facts_options, pop_model_facts


@click.command("calibrate")
@click.argument("model")
@click.option("--images", required=True, help="Folder of calibration images (or a dataset folder, or 'synthetic').")
@click.option("--out", default=None, help="Q/DQ ONNX to write [default: MODEL.int8.onnx].")
@click.option("--method", type=click.Choice(["auto", "minmax", "percentile", "entropy", "mse"]), default="auto",
              show_default=True, help="Activation thresholds; auto tries minmax, percentile, entropy and mse and keeps "
              "the one whose INT8 argmax agrees with FP32 on the most calibration pixels.")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="Fold each conv's mean INT8 output shift into its bias (Nagel et al. 2019).")
@click.option("--quantize-outputs", is_flag=True,
              help="Also put Q/DQ on conv outputs: lets ONNX Runtime's CPU provider fuse QLinearConv. With "
                   "--asymmetric a Relu/Clip after a conv is folded into it (one rounding, no Relu left: "
                   "ONNX Runtime's fastest CPU layout); TensorRT wants symmetric Q/DQ on inputs only.")
@click.option("--percentile", type=float, default=99.99, show_default=True)
@click.option("--num", type=int, default=500, show_default=True, help="Images to use (all if fewer).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the image selection.")
@click.option("--symmetric/--asymmetric", default=True, show_default=True, help="Activation quantisation.")
@click.option("--data", default=None, help="Labelled data (val split) to measure INT8 against FP32 [classes: its "
              "dataset.yaml, else the model's].")
@ignore_index
@click.option("--max-miou-drop", type=float, default=None,
              help="Keep the most sensitive layers in float until INT8 is within this many mIoU points of FP32: "
                   "layers are picked on the first half of --data's val split, the result is reported on the "
                   "second half.")
@click.option("--report", is_flag=True, help="Print the per-layer sensitivity table, ranked on the first half of "
              "--data (needs --data).")
@click.option("--sensitivity-images", type=int, default=50, show_default=True,
              help="Pick images used to rank layers (the budget is fitted on all pick images).")
@click.option("--max-images", type=int, default=None, help="Use only the first N images of --data.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where ONNX Runtime collects the ranges.")
@model_facts_options
def calibrate_command(model, images, **options):
    """Collect INT8 ranges; write a Q/DQ ONNX, a TensorRT calibration cache and the ranges.

    Example: edgeseg calibrate pruned.onnx --images calibration/
    """
    from edgeseg.quant.api import calibrate

    calibrate(model, images, facts=pop_model_facts(options), **options)
