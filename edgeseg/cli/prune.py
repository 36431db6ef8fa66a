from pathlib import Path

import click

from edgeseg.cli.options import (ignore_index, model_facts_options, pop_model_facts, resume, seed, threads,
                                 trust_checkpoint)


@click.command("prune")
@click.argument("model")
@click.option("--ratio", type=float, default=0.4, show_default=True, help="Fraction of channels to remove.")
@click.option("--out", default=None, help="Pruned checkpoint [default: pruned.pt next to MODEL].")
@click.option("--target-macs", type=float, default=None, help="Prune in steps until MACs <= this (e.g. 5e8).")
@click.option("--target-params", type=float, default=None, help="Prune in steps until parameters <= this.")
@click.option("--target-latency-ms", type=float, default=None,
              help="Prune in steps, exporting and timing the model on --backend after each, until its median "
                   "latency is <= this.")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="Where --target-latency-ms is measured (tensorrt: an FP16 engine).")
@click.option("--device", default="cpu", show_default=True, help="Device for the latency measurement (cpu, cuda).")
@click.option("--importance", type=click.Choice(["magnitude", "bn-scale", "taylor", "random"]), default="magnitude",
              show_default=True, help="Channel ranking; taylor needs --data.")
@click.option("--sparsity-epochs", type=int, default=0, show_default=True,
              help="Network slimming: first train N epochs with an L1 penalty on BN scales (bn-scale; needs --data).")
@click.option("--sparsity", type=float, default=1e-4, show_default=True, help="Strength of that L1 penalty.")
@click.option("--taylor-images", type=int, default=64, show_default=True,
              help="Training images whose gradients rank channels for --importance taylor.")
@click.option("--global/--uniform", "global_pruning", default=False, show_default=True,
              help="Rank channels across layers, or prune each layer by the same ratio.")
@click.option("--round-to", type=int, default=None, help="Keep channel counts multiples of N (8 suits TensorRT).")
@click.option("--finetune-epochs", type=int, default=0, show_default=True,
              help="Recover accuracy by distilling from the unpruned model for N epochs (needs --data).")
@click.option("--data", default=None, help="Training data (fine-tuning, taylor, sparsity phase) [classes: its "
              "dataset.yaml, else the model's].")
@ignore_index
@click.option("--class-weights", default=None,
              help="Weigh fine-tuning's cross-entropy per class: sqrt-median-frequency, median-frequency, W0,W1,... "
                   "or none [default: the mode MODEL was trained with].")
@click.option("--teacher", default=None, help="Teacher for fine-tuning [default: the unpruned model].")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=None, help="Fine-tuning learning rate [default: 5e-4].")
@resume("Continue a killed fine-tuning from OUT.state (written after every epoch); prunes again first "
        "(re-running any --sparsity-epochs), so give the same options as the run that was killed.")
@model_facts_options
@seed
@threads
@trust_checkpoint
def prune_command(model, out, **options):
    """Remove channels structurally (Torch-Pruning dependency graph); the classifier keeps its width.

    \b
    Examples:
      edgeseg prune student.pt --ratio 0.4 --finetune-epochs 5 --data camvid/
      edgeseg prune student.pt --target-latency-ms 8 --backend onnxruntime --importance taylor --data camvid/
      edgeseg prune model_29.pth --arch torchvision:lraspp_mobilenet_v3_large --input-size 360x480
    """
    from edgeseg.pruning.api import prune

    facts = pop_model_facts(options)
    prune(model, out or str(Path(model).with_name("pruned.pt")), facts=facts, **options)
