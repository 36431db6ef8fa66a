import click

from edgeseg.cli.options import model_facts_options, pop_model_facts


@click.command("build-engine")
@click.argument("model")
@click.option("--out", default=None, help="Engine (or ONNX Runtime artifact) to write.")
@click.option("--int8/--no-int8", default=False, show_default=True, help="INT8 (from the calibration edgeseg wrote).")
@click.option("--int8-source", type=click.Choice(["auto", "qdq", "cache"]), default="auto", show_default=True,
              help="Where TensorRT takes INT8 from: the Q/DQ model calibrate wrote (auto on TensorRT >= 10) or the "
                   "calibration cache (auto on 8.5 and for the DLA on 8.5-10.x).")
@click.option("--fp16/--no-fp16", default=False, show_default=True)
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto", show_default=True)
@click.option("--max-batch", type=int, default=8, show_default=True)
@click.option("--shape", default=None,
              help="Optimisation profile batch sizes MIN:OPT:MAX, e.g. 1:4:8 [default: 1:1:--max-batch].")
@click.option("--workspace-mb", type=int, default=2048, show_default=True)
@click.option("--dla-core", type=int, default=None,
              help="Build for this DLA core (Xavier, AGX Orin), with GPU fallback for the layers DLA cannot run; "
                   "the DLA needs a static batch (default 1, or --shape N:N:N).")
@click.option("--layer-precision", multiple=True, metavar="NAME=fp32",
              help="Pin an ONNX node's precision (repeatable), e.g. from calibrate's sensitivity list.")
@click.option("--timing-cache", default="default", show_default=True,
              help="Timing cache reused between builds: a path, 'default' (~/.cache/edgeseg/tensorrt/) or 'none'.")
@click.option("--version-compatible/--no-version-compatible", default=False, show_default=True,
              help="An engine later TensorRT versions can run (TensorRT >= 8.6; it carries host code).")
@click.option("--fp16-io/--fp32-io", default=False, show_default=True,
              help="TensorRT 11 --fp16: FP16 input/output instead of FP32.")
@click.option("--print-trtexec", is_flag=True, default=False,
              help="Only print the equivalent trtexec command and build no engine (a calibration cache it names is "
                   "first re-headed for --trt-version).")
@click.option("--trt-version", default=None,
              help="TensorRT version --print-trtexec targets [default: the installed one, else 10.3].")
@model_facts_options
def build_engine_command(model, **options):
    """Build a TensorRT engine, or the ONNX Runtime artifact where TensorRT is absent.

    \b
    Examples:
      edgeseg build-engine pruned.onnx --int8
      edgeseg build-engine pruned.onnx --int8 --dla-core 0 --shape 4:4:4
      edgeseg build-engine pruned.onnx --fp16 --print-trtexec --trt-version 11.4
    """
    from edgeseg.engine.api import build_engine
    from edgeseg.fileio import require_onnx_model
    from edgeseg.foreign_onnx import adopt_onnx

    facts = pop_model_facts(options)
    adopt_onnx(require_onnx_model(model), facts)  # an ONNX from another tool enters once, with what the user gave
    build_engine(model, **options)
