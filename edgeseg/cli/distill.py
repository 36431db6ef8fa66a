import click

from edgeseg.cli.options import arch_args, ignore_index, pop_train_config, training_options, trust_checkpoint


@click.command("distill")
@click.argument("teacher")
@click.option("--teacher-arch", default=None,
              help="Architecture of a bare state_dict teacher: a registered name or torchvision:NAME "
                   "(e.g. torchvision:deeplabv3_resnet101).")
@click.option("--teacher-weights", default=None,
              help="TEACHER is torchvision:NAME with these pretrained weights from torchvision's local cache "
                   "(e.g. COCO_WITH_VOC_LABELS_V1); never downloaded.")
@click.option("--student", default="mobilenetv3", show_default=True,
              help="Registered student architecture, or a Hugging Face model folder (starts from its weights).")
@click.option("--student-arg", multiple=True, help="Constructor argument of the student KEY=VALUE, e.g. base_channels=8.")
@click.option("--data", required=True, help="Dataset folder or 'synthetic' [classes: its dataset.yaml, else the "
              "teacher's].")
@ignore_index
@click.option("--out", default="student.pt", show_default=True, help="Student checkpoint to write.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Softmax temperature of the KL term.")
@click.option("--kd-weight", type=float, default=1.0, show_default=True, help="Weight of the KL term next to CE.")
@click.option("--loss", default="kl", show_default=True,
              help="Distillation terms joined by '+': kl (pixel-wise KL), cwd (channel-wise), feat (features).")
@click.option("--loss-weight", "loss_weight", multiple=True, help="TERM=WEIGHT, e.g. cwd=3 [defaults: kl 1, cwd 3, feat 1].")
@click.option("--feature-pair", "feature_pairs", multiple=True,
              help="STUDENT_MODULE:TEACHER_MODULE whose outputs the 'feat' term matches.")
@click.option("--feature-loss", type=click.Choice(["mse", "cwd"]), default="mse", show_default=True)
@click.option("--class-weights", default=None,
              help="Weigh the labels' cross-entropy per class: sqrt-median-frequency, median-frequency, W0,W1,... or "
                   "none [default: the mode TEACHER was trained with].")
@trust_checkpoint
@training_options
def distill_command(teacher, loss_weight, student_arg, **options):
    """Distill a teacher into a small student (pixel-wise KL + cross-entropy).

    Example: edgeseg distill teacher.pt --student mobilenetv3 --data camvid/ --loss kl+cwd

    Several processes (DDP): torchrun --nproc_per_node 2 -m edgeseg.cli distill teacher.pt ...
    """
    from edgeseg.distillation.api import distill

    weights = {}
    for pair in loss_weight:
        term, sep, value = pair.partition("=")
        try:
            weights[term.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"'{pair}' is not TERM=NUMBER", param_hint="--loss-weight") from None
    distill(teacher, loss_weights=weights, student_args=arch_args(student_arg, "--student-arg"),
            training=pop_train_config(options), **options)
