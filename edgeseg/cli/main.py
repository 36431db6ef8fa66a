"""The ``edgeseg`` command: a click group whose verbs are imported only when used.

``edgeseg --help`` must stay fast and must not import torch: each verb lives in its
own small module that imports click alone at the top and the heavy function inside
the command body.
"""
from __future__ import annotations

import importlib
import sys

import click

# verb -> (module, attribute); the order is the pipeline's order in --help
COMMANDS = {
    "demo": ("edgeseg.cli.demo", "demo_command"),
    "train": ("edgeseg.cli.train", "train_command"),
    "distill": ("edgeseg.cli.distill", "distill_command"),
    "prune": ("edgeseg.cli.prune", "prune_command"),
    "export": ("edgeseg.cli.export", "export_command"),
    "calibrate": ("edgeseg.cli.calibrate", "calibrate_command"),
    "qat": ("edgeseg.cli.qat", "qat_command"),
    "build-engine": ("edgeseg.cli.build_engine", "build_engine_command"),
    "bench": ("edgeseg.cli.bench", "bench_command"),
    "eval": ("edgeseg.cli.bench", "eval_command"),
    "report": ("edgeseg.cli.report", "report_command"),
    "predict": ("edgeseg.cli.predict", "predict_command"),
    "info": ("edgeseg.cli.info", "info_command"),
}


TORCH_PACKAGES = ("torch", "torchvision", "torch_pruning")


class UserError(click.ClickException):
    """An EdgesegError shown as one line, with the error's own exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx):
        from edgeseg.errors import EdgesegError, speak_to_cli

        speak_to_cli(True)  # errors name the command's options, not Python's arguments
        try:
            return super().invoke(ctx)
        except EdgesegError as exc:
            raise UserError(str(exc), exc.exit_code) from None
        except ModuleNotFoundError as exc:  # a training-side verb on a deploy-only install (JetPack, no torch)
            if (exc.name or "").split(".")[0] not in TORCH_PACKAGES:
                raise
            message = (f"`edgeseg {ctx.invoked_subcommand}` needs PyTorch, and {exc.name} is not installed here: "
                       f"install torch and torchvision (pip install edgeseg brings them), or run only the deploy "
                       f"side (bench, eval, info, build-engine), which works without them.")
            raise UserError(message, 2) from None
        except (OSError, RuntimeError) as exc:  # a write outside an atomic_path, e.g. a temporary file
            from edgeseg.fileio import out_of_space_error

            error = out_of_space_error(exc)
            if error is None:
                raise
            raise UserError(str(error), error.exit_code) from None
        finally:
            speak_to_cli(False)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="edgeseg")
def cli():
    """edgeseg: make a trained segmentation model fast on edge GPUs without losing its accuracy.

    \b
    The pipeline, one verb per stage:
      edgeseg distill teacher.pt --student mobilenetv3 --data camvid/
      edgeseg prune student.pt --ratio 0.4
      edgeseg export pruned.pt
      edgeseg calibrate pruned.onnx --images calibration/
      edgeseg build-engine pruned.onnx --int8
      edgeseg bench pruned.engine --data camvid/val
    """


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="edgeseg")


if __name__ == "__main__":
    main(sys.argv[1:])
