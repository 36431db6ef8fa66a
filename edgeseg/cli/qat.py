import click

from edgeseg.cli.options import (ignore_index, loop_options, model_facts_options, pop_model_facts, pop_train_config,
                                 trust_checkpoint)


@click.command("qat")
@click.argument("model")
@click.option("--data", required=True, help="Training data (train/ and val/ splits) [classes: its dataset.yaml, else "
              "the model's].")
@click.option("--out", default=None, help="Q/DQ ONNX to write [default: MODEL's name + .qat.int8.onnx]; the TensorRT "
              "cache <base>.calib.cache and its FP32 twin <base>.calib.onnx go beside it.")
@click.option("--images", default=None, help="Images whose ranges start the scales [default: --data's train split].")
@click.option("--method", type=click.Choice(["auto", "minmax", "percentile", "entropy", "mse"]), default="auto",
              show_default=True, help="calibrate's method for the starting ranges.")
@click.option("--percentile", type=float, default=99.99, show_default=True)
@click.option("--num", type=int, default=500, show_default=True, help="Calibration images to use (all if fewer).")
@click.option("--scales", type=click.Choice(["learned", "fixed"]), default="learned", show_default=True,
              help="Activation scales trained with the weights (LSQ) or kept at calibrate's.")
@click.option("--quantize-outputs", is_flag=True, help="Also put Q/DQ on conv outputs (calibrate's option of that "
              "name; TensorRT wants inputs only).")
@click.option("--keep-float", multiple=True, help="ONNX node to keep in float besides the logits path (repeatable), "
              "e.g. /decoder/up1/Conv.")
@click.option("--max-miou-drop", type=float, default=None,
              help="Before training, keep calibrate's most sensitive layers in float until INT8 is within this many "
                   "mIoU points of FP32 (calibrate's option, on --data's val split).")
@click.option("--kd-weight", type=float, default=1.0, show_default=True,
              help="Weight of the distillation from the FP32 model's logits (0: the labels alone).")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Distillation temperature.")
@ignore_index
@model_facts_options
@loop_options(5, "Peak learning rate [default: a hundredth of train's: 1e-5 AdamW, 1e-4 SGD].")
@trust_checkpoint
def qat_command(model, out, scales, **options):
    """Quantization-aware training: fine-tune with INT8 rounding; write calibrate's Q/DQ ONNX layout.

    \b
    Examples:
      edgeseg qat pruned.pt --data camvid/ --epochs 5 --out pruned.qat.int8.onnx
      edgeseg qat model_29.pth --arch torchvision:lraspp_mobilenet_v3_large --input-size 360x480 --data camvid/

    Several processes (DDP): torchrun --nproc_per_node 2 -m edgeseg.cli qat pruned.pt --data camvid/ ...
    """
    from edgeseg.quantization_aware.api import qat

    facts = pop_model_facts(options)
    training = pop_train_config(options)
    qat(model, out=out, training=training, learn_scales=scales == "learned", facts=facts, **options)
