from pathlib import Path

import click

from edgeseg.cli.options import arch_args, data_num_classes, ignore_index, pop_train_config, training_options


@click.command("train")
@click.option("--arch", required=True, help="Registered architecture (unet, mobilenetv3, segformer-b0, ...; see the manual's architectures guide), "
                   "torchvision:NAME, smp:ARCH:ENCODER, or your own path/file.py:function.")
@click.option("--data", required=True, help="Dataset folder (train/ and val/ splits, or one split) or 'synthetic'; "
              "its dataset.yaml says the classes.")
@data_num_classes
@ignore_index
@click.option("--out", default=None, help="Checkpoint to write [default: ARCH.pt].")
@click.option("--arch-arg", multiple=True, help="Constructor argument KEY=VALUE, e.g. base_channels=16.")
@click.option("--weights", default=None,
              help="Start from torchvision's pretrained segmentation weights of this name (with --arch "
                   "torchvision:NAME, e.g. COCO_WITH_VOC_LABELS_V1), read from torchvision's local cache, never "
                   "downloaded.")
@click.option("--class-weights", default=None,
              help="Weigh the cross-entropy per class so rare and thin classes (poles, pedestrians) are learned: "
                   "sqrt-median-frequency (softer), median-frequency (SegNet's), or one weight per class W0,W1,... "
                   "[default: none]. prune's fine-tuning of the checkpoint reuses it.")
@training_options
def train_command(arch, data, out, arch_arg, **options):
    """Train an architecture (from scratch, an ImageNet backbone, or torchvision's pretrained weights).

    Example: edgeseg train --arch deeplabv3-resnet50 --data camvid/ --out teacher.pt

    A folder without dataset.yaml needs --num-classes (and --ignore-index unless 255 marks unlabelled pixels).

    Several processes (DDP): torchrun --nproc_per_node 2 -m edgeseg.cli train --arch unet ...
    """
    from edgeseg.training.api import train

    default_out = Path(arch.rpartition(":")[0]).stem if ".py:" in arch else arch.replace(":", "-")
    train(arch, data, out or f"{default_out}.pt", arch_args=arch_args(arch_arg, "--arch-arg"),
          training=pop_train_config(options), **options)
