import click


@click.command("info")
@click.argument("artifact", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the whole sidecar as JSON.")
def info_command(artifact, as_json):
    """Show what the sidecar says about an artifact (and whether the file still matches it), or
    for an ONNX another tool wrote, what its graph says; without an artifact, what this
    machine can run (TensorRT, GPU, JetPack/L4T, ONNX Runtime providers).

    \b
    Examples:
      edgeseg info pruned.int8.onnx
      edgeseg info
    """
    if artifact is None:
        from edgeseg.device_info import print_device_report

        print_device_report(as_json)
        return
    from edgeseg.artifact_info import info

    info(artifact, as_json=as_json)
