import click

from edgeseg.cli.options import training_options, trust_checkpoint


@click.command("distill")
@click.argument("teacher")
@click.option("--student", default="mobilenetv3", show_default=True, help="Registered student architecture.")
@click.option("--data", required=True, help="Dataset folder or 'synthetic'.")
@click.option("--out", default="student.pt", show_default=True, help="Student checkpoint to write.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Softmax temperature of the KL term.")
@click.option("--kd-weight", type=float, default=1.0, show_default=True, help="Weight of the KL term next to CE.")
@trust_checkpoint
@training_options
def distill_command(teacher, **options):
    """Distill a teacher into a small student (pixel-wise KL + cross-entropy).

    Example: edgeseg distill teacher.pt --student mobilenetv3 --data camvid/
    """
    from edgeseg.distillation.api import distill

    distill(teacher, **options)
