import click

from edgeseg.cli.options import ignore_index, model_facts_options, pop_model_facts, trust_checkpoint


@click.command("export")
@click.argument("model")
@click.option("--out", default=None, help="ONNX file [default: MODEL with .onnx].")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--data", default=None, help="Images to verify the export on [default: the training data]; its "
              "dataset.yaml names the classes of a model made elsewhere.")
@ignore_index
@click.option("--verify-images", type=int, default=8, show_default=True)
@click.option("--simplify/--no-simplify", "simplify_model", default=True, show_default=True)
@click.option("--argmax/--no-argmax", default=False, show_default=True,
              help="Put the argmax in the graph: the model outputs its NxHxW class map instead of float logits "
                   "(C times fewer bytes, no host argmax).")
@click.option("--argmax-dtype", type=click.Choice(["uint8", "int32"]), default=None,
              help="Class-map dtype [default: uint8 up to 255 classes, else int32]. uint8 suits ONNX Runtime and "
                   "TensorRT >= 10; TensorRT 8.5 (JetPack 5) maps ArgMax to TopK and needs int32.")
@model_facts_options
@trust_checkpoint
def export_command(model, **options):
    """Export to ONNX (dynamic batch), simplify, check, and verify against PyTorch.

    \b
    Examples:
      edgeseg export pruned.pt --out pruned.onnx
      edgeseg export pruned.pt --argmax --out pruned.classes.onnx
    """
    from edgeseg.exporting.api import export

    facts = pop_model_facts(options)
    options.pop("ignore_index")  # only what --data's dataset says of its labels, which facts now carry
    export(model, facts=facts, **options)
