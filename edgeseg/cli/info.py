import click


@click.command("info")
@click.argument("artifact")
@click.option("--json", "as_json", is_flag=True, help="Print the whole sidecar as JSON.")
def info_command(artifact, as_json):
    """Show what the sidecar says about an artifact (and whether the file still matches it).

    Example: edgeseg info pruned.int8.onnx
    """
    from edgeseg.artifact_info import info

    info(artifact, as_json=as_json)
