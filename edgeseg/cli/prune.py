from pathlib import Path

import click

from edgeseg.cli.options import seed, threads, trust_checkpoint


@click.command("prune")
@click.argument("model")
@click.option("--ratio", type=float, default=0.4, show_default=True, help="Fraction of channels to remove.")
@click.option("--out", default=None, help="Pruned checkpoint [default: pruned.pt next to MODEL].")
@click.option("--target-macs", type=float, default=None, help="Prune in steps until MACs <= this (e.g. 5e8).")
@click.option("--target-params", type=float, default=None, help="Prune in steps until parameters <= this.")
@click.option("--importance", type=click.Choice(["magnitude", "bn-scale", "random"]), default="magnitude",
              show_default=True)
@click.option("--global/--uniform", "global_pruning", default=False, show_default=True,
              help="Rank channels across layers, or prune each layer by the same ratio.")
@click.option("--round-to", type=int, default=None, help="Keep channel counts multiples of N (8 suits TensorRT).")
@click.option("--finetune-epochs", type=int, default=0, show_default=True,
              help="Recover accuracy by distilling from the unpruned model for N epochs (needs --data).")
@click.option("--data", default=None, help="Dataset for fine-tuning.")
@click.option("--teacher", default=None, help="Teacher for fine-tuning [default: the unpruned model].")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=None, help="Fine-tuning learning rate [default: 5e-4].")
@seed
@threads
@trust_checkpoint
def prune_command(model, out, **options):
    """Remove channels structurally (Torch-Pruning dependency graph); the classifier keeps its width.

    Example: edgeseg prune student.pt --ratio 0.4 --finetune-epochs 5 --data camvid/
    """
    from edgeseg.pruning.api import prune

    prune(model, out or str(Path(model).with_name("pruned.pt")), **options)
