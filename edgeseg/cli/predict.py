import click

from edgeseg.cli.options import (engine_dla_core, ignore_index, model_facts_options, pop_model_facts, threads,
                                 trust_checkpoint, trust_engine)
from edgeseg.errors import ConfigError


@click.command("predict")
@click.argument("model")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", default="predictions", show_default=True, help="Folder for masks/, overlays/ and videos.")
@click.option("--save", multiple=True,
              help="What to write, comma-separated or repeated: masks, overlays, video, none "
                   "[default: masks,overlays for images; video for videos, cameras and streams].")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Mask opacity in overlays (0-1).")
@click.option("--show/--no-show", default=False, show_default=True,
              help="Show the overlay in a window where there is a display (q or Esc closes it).")
@click.option("--stats/--no-stats", default=False, show_default=True, help="Print the share of pixels of each class.")
@click.option("--max-frames", type=int, default=None,
              help="Stop after N frames (a camera or stream otherwise runs until Ctrl-C).")
@click.option("--json", "json_out", default=None, help="Write the run's summary as JSON.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
@click.option("--streams", type=int, default=None,
              help="Inference sessions side by side [default: 2 for ONNX Runtime on a CPU reading files (each "
                   "with half the cores: more frames a second than one session with all of them), else 1].")
@click.option("--data", default=None,
              help="A dataset whose dataset.yaml names the classes and their colours, for a model made elsewhere.")
@ignore_index
@model_facts_options
@threads
@trust_checkpoint
@trust_engine
@engine_dla_core
def predict_command(model, sources, **options):
    """Segment images, videos, cameras or streams: palette PNG masks, overlays, overlay videos.

    MODEL is any .pt, .onnx or .engine edgeseg can bench. SOURCE is an image, a folder, a
    glob, a .txt list of paths, a video (mp4, avi, mkv), a camera (0, /dev/video0),
    csi://0 (a Jetson CSI camera) or an rtsp:// stream. Videos and cameras need OpenCV:
    pip install 'edgeseg[video]'.

    \b
    Examples:
      edgeseg predict pruned.int8.onnx street/ --out predictions
      edgeseg predict pruned.engine drive.mp4 --save video,masks
      edgeseg predict pruned.engine 0 --show --max-frames 300
      edgeseg predict exported-elsewhere.onnx street/ --input-size 360x480 --data camvid/
    """
    from edgeseg.predict.api import predict

    facts = pop_model_facts(options)  # reads --data's dataset.yaml and leaves the option
    data = options.pop("data", None)
    options.pop("ignore_index")  # only what --data's dataset says of its labels, which facts now carry
    if data and facts.dataset is None:
        raise ConfigError(f"--data {data} names no classes: it is no dataset edgeseg reads, or has no dataset.yaml "
                          f"(in it or its parent) and no VOC, ADE20K or Cityscapes layout; give the dataset root "
                          f"whose dataset.yaml names the classes and their colours.")
    predict(model, list(sources), facts=facts, **options)
