"""Options several verbs share, declared once."""
from __future__ import annotations

import click

trust_checkpoint = click.option(
    "--trust-checkpoint/--no-trust-checkpoint", default=False, show_default=True,
    help="Allow loading a pickled Python module, which can run arbitrary code: only for files you made or trust.")
_trust_engine = click.option(
    "--trust-engine/--no-trust-engine", default=False, show_default=True,
    help="Run a TensorRT engine whose sha256 does not match its sidecar (engines are executable code).")
_allow_engine_host_code = click.option(
    "--allow-engine-host-code/--no-allow-engine-host-code", default=False, show_default=True,
    help="Let a version-compatible TensorRT engine run the host code it carries (only for engines you trust).")


engine_dla_core = click.option(
    "--engine-dla-core", type=int, default=None,
    help="The DLA core an engine built elsewhere (trtexec --useDLACore=N) was built for; TensorRT loads a DLA engine "
         "only onto its core [default: the sidecar's, for engines edgeseg built].")


def trust_engine(function):
    """The two opt-ins for running TensorRT engines, which NVIDIA calls executable artifacts."""
    return _trust_engine(_allow_engine_host_code(function))


def arch_args(pairs, option: str) -> dict:
    """("base_channels=8", "encoder_depth=3") -> {"base_channels": 8, "encoder_depth": 3}."""
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint=option)
        args[key.replace("-", "_")] = int(value) if value.lstrip("-").isdigit() else value
    return args


ignore_index = click.option(
    "--ignore-index", type=int, default=255, show_default=True,
    help="Label value of unlabelled pixels in --data (e.g. 11 for CamVid's 'void'), where no dataset.yaml says it: "
         "a dataset.yaml's ignore_index wins.")
# bench, eval and report measure a model that already says its unlabelled value (train recorded it): that is their
# default, so a model trained with --ignore-index 11 on a folder without dataset.yaml is measured the same way
measured_ignore_index = click.option(
    "--ignore-index", type=int, default=None,
    help="Label value of unlabelled pixels in --data, where no dataset.yaml says it [default: the one the model was "
         "trained with, else 255]; a dataset.yaml's ignore_index wins.")
data_num_classes = click.option(
    "--num-classes", type=int, default=None,
    help="Classes in --data where no dataset.yaml says it (and it is no VOC, ADE20K or Cityscapes folder); a "
         "dataset.yaml's num_classes wins, and a different count is refused. edgeseg never guesses it from the "
         "largest label value.")

threads = click.option("--threads", type=int, default=None, help="CPU threads for PyTorch / ONNX Runtime.")
seed = click.option("--seed", type=int, default=0, show_default=True, help="Random seed (data order, init).")


def resume(help_text: str):
    """--resume, as train, distill and prune's fine-tuning share it (OUT.state after every epoch)."""
    return click.option("--resume/--no-resume", default=False, show_default=True, help=help_text)


def _apply_recipe(ctx, _param, value):
    """--recipe FILE: the file's section for this verb becomes the default of every option not given."""
    if value:
        from edgeseg.recipe import load_recipe

        allowed = [p.name for p in ctx.command.params if p.name != "recipe"]
        ctx.default_map = {**(ctx.default_map or {}), **load_recipe(value, ctx.command.name, allowed)}
    return value


def _loop_options(epochs: int, lr_help: str) -> list:
    """The options that make one TrainConfig (the training loop's settings), in --help order."""
    return [
        click.option("--epochs", type=int, default=epochs, show_default=True),
        click.option("--batch-size", type=int, default=8, show_default=True),
        click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True),
        click.option("--lr", type=float, default=None, help=lr_help),
        click.option("--weight-decay", type=float, default=1e-4, show_default=True),
        click.option("--val-every", type=int, default=5, show_default=True, help="Validate every N epochs."),
        click.option("--warmup-epochs", type=float, default=0.0, show_default=True, help="Linear LR warm-up."),
        click.option("--grad-clip", type=float, default=0.0, show_default=True, help="Max gradient norm (0 = off)."),
        click.option("--ema-decay", type=float, default=0.0, show_default=True,
                     help="Keep an exponential moving average of the weights (e.g. 0.999; 0 = off)."),
        resume("Continue a killed run from OUT.state (written after every epoch)."),
        click.option("--device", default="cpu", show_default=True,
                     help="cpu or cuda (under torchrun: one GPU per process)."),
        click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision on CUDA."),
        click.option("--sync-bn/--no-sync-bn", default=False, show_default=True,
                     help="SyncBatchNorm across torchrun processes (CUDA)."),
        click.option("--tensorboard/--no-tensorboard", default=True, show_default=True,
                     help="Write TensorBoard events to OUT.tb/."),
        click.option("--augment", type=click.Choice(["standard", "reference"]), default="standard",
                     show_default=True,
                     help="Training augmentation: standard (zoom 0.75-1.5x of the frame shrunk to the input "
                          "size, flip, colour jitter 0.3) or reference (the recipe users run by hand with "
                          "torchvision, random scale 0.5-1.0 of a 360x480 CamVid frame and crop 180x240: zoom "
                          "1-2x from the frame at up to twice the input size, flip, no colour jitter; sharper "
                          "only where --input-size is smaller than the frames)."),
        seed, threads,
    ]


_RECIPE = click.option("--recipe", default=None, is_eager=True, expose_value=False, callback=_apply_recipe,
                       help="YAML recipe whose section for this verb sets the options not given here.")
TRAIN_CONFIG_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "val_every", "warmup_epochs",
                       "grad_clip", "ema_decay", "device", "amp", "sync_bn", "tensorboard", "augment", "seed",
                       "threads")


def training_options(function):
    """Optimisation options of train and distill."""
    loop = _loop_options(30, "Peak learning rate [default: 1e-3 AdamW, 0.01 SGD].")
    for option in reversed([
        _RECIPE,
        click.option("--backbone-weights", default=None,
                     help="Start the encoder from 'imagenet' (torchvision's weights, from its local cache; never "
                          "downloaded), a classification checkpoint PATH (torchvision or timm), or 'scratch' "
                          "[default: ImageNet when cached, else scratch]."),
        *loop[:5],
        click.option("--input-size", default=None, help="Training/inference size HEIGHTxWIDTH, e.g. 180x240."),
        *loop[5:],
    ]):
        function = option(function)
    return function


def loop_options(epochs: int, lr_help: str):
    """The training loop's options alone (no --input-size or --backbone-weights: the model brings those), with
    --recipe; a verb turns them into one TrainConfig with ``pop_train_config``."""
    def decorate(function):
        for option in reversed([_RECIPE, *_loop_options(epochs, lr_help)]):
            function = option(function)
        return function
    return decorate


def pop_train_config(options: dict):
    """Take the loop's options out of a verb's options and build the one TrainConfig (``resume`` stays)."""
    from edgeseg.training.loop import TrainConfig

    return TrainConfig(**{name: options.pop(name) for name in TRAIN_CONFIG_FIELDS})


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not three numbers R,G,B", param_hint=f"--{param.name}") from None


def model_facts_options(function):
    """What edgeseg cannot read from a model file it did not make; a verb passes them on as one ModelFacts."""
    for option in reversed([
        click.option("--arch", default=None,
                     help="Architecture of a checkpoint edgeseg did not make: a registered name, torchvision:NAME, "
                          "smp:ARCH:ENCODER or path/file.py:function."),
        click.option("--num-classes", type=int, default=None,
                     help="Classes the model predicts, for a file that does not record them [default: read from its "
                          "weights or output, else --data's dataset.yaml]."),
        click.option("--input-size", "model_input_size", default=None,
                     help="Model input HEIGHTxWIDTH, when the file does not record it (e.g. 520x520)."),
        click.option("--mean", default=None, callback=_floats,
                     help="Normalisation mean R,G,B in 0-1 or 0-255 units [default: ImageNet's]."),
        click.option("--std", default=None, callback=_floats,
                     help="Normalisation std R,G,B in 0-1 or 0-255 units [default: ImageNet's]."),
    ]):
        function = option(function)
    return function


def pop_model_facts(options: dict):
    """Take the model-facts options out of a verb's options and build the one ModelFacts object; --data's
    dataset.yaml (or standard layout; --data and --ignore-index are left in ``options``) supplies class names
    and palette."""
    from edgeseg.spec import ModelFacts
    from edgeseg.training.data import parse_size

    size = options.pop("model_input_size", None)
    mean, std = options.pop("mean", None), options.pop("std", None)
    dataset = None
    if options.get("data"):
        from edgeseg.data.dataset import dataset_info

        given = options.get("ignore_index")  # None where the verb defaults to the model's (bench, eval, report)
        dataset = dataset_info(options["data"], 255 if given is None else given)
    return ModelFacts(arch=options.pop("arch", None), num_classes=options.pop("num_classes", None),
                      input_size=parse_size(size) if size else None, mean=mean, std=std,  # either unit
                      dataset=dataset, dla_core=options.pop("engine_dla_core", None))
