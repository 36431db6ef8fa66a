import click

from edgeseg.cli.options import measured_ignore_index, threads, trust_checkpoint, trust_engine


@click.command("report")
@click.argument("run_dir")
@click.option("--data", default=None, help="Labelled data whose val split to measure on [default: the run's own].")
@measured_ignore_index
@click.option("--out", default=None, help="Folder for report.md/json and the PNGs [default: RUN_DIR].")
@click.option("--rounds", type=int, default=10, show_default=True, help="Latency rounds; stages take turns in each.")
@click.option("--iters", "iters_per_round", type=int, default=10, show_default=True, help="Timed calls per round.")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--masks", "mask_images", type=int, default=4, show_default=True,
              help="Images in the predicted-mask grid (0: none).")
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
@threads
@trust_checkpoint
@trust_engine
def report_command(run_dir, **options):
    """Measure every stage of a pipeline run alike and write report.md, report.json and PNGs
    (latency vs mIoU, per-class IoU, predicted masks).

    Example: edgeseg report runs/camvid-cpu --data camvid-test/
    """
    from edgeseg.report.api import report

    report(run_dir, **options)
