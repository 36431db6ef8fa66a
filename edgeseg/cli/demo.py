import click


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Folder for every artifact and the report.")
@click.option("--fast", is_flag=True, help="Tiny data and one epoch per stage: a smoke test of the whole path.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo_command(out, fast, seed):
    """The whole pipeline on edgeseg's synthetic street scenes, with a stage-by-stage report.

    Example: edgeseg demo --out runs/demo
    """
    from edgeseg.pipeline import demo

    demo(out, fast=fast, seed=seed)
