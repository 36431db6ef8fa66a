import click

from edgeseg.cli.options import trust_checkpoint


@click.command("export")
@click.argument("model")
@click.option("--out", default=None, help="ONNX file [default: MODEL with .onnx].")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--data", default=None, help="Images to verify the export on [default: the training data].")
@click.option("--verify-images", type=int, default=8, show_default=True)
@click.option("--simplify/--no-simplify", "simplify_model", default=True, show_default=True)
@trust_checkpoint
def export_command(model, **options):
    """Export to ONNX (dynamic batch), simplify, check, and verify against PyTorch.

    Example: edgeseg export pruned.pt --out pruned.onnx
    """
    from edgeseg.exporting.api import export

    export(model, **options)
