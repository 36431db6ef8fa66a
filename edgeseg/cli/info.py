import click

from edgeseg.cli.options import model_facts_options, pop_model_facts, trust_checkpoint


@click.command("info")
@click.argument("artifact", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the whole sidecar as JSON.")
@model_facts_options
@trust_checkpoint
def info_command(artifact, as_json, **options):
    """Show what the sidecar says about an artifact (and whether the file still matches it); for a file
    edgeseg did not make, what it holds: an ONNX graph (parameters and MACs counted from it), a
    checkpoint (a bare state_dict loads with --arch), a TensorRT calibration cache. Without an
    artifact, what this machine can run (TensorRT, GPU, JetPack/L4T, ONNX Runtime providers).

    \b
    Examples:
      edgeseg info pruned.int8.onnx
      edgeseg info model_29.pth --arch torchvision:lraspp_mobilenet_v3_large --input-size 520x520
      edgeseg info
    """
    trust = options.pop("trust_checkpoint")
    facts = pop_model_facts(options)
    if artifact is None:
        from edgeseg.device_info import print_device_report

        print_device_report(as_json)
        return
    from edgeseg.artifact_info import info

    info(artifact, as_json=as_json, facts=facts, trust_checkpoint=trust)
