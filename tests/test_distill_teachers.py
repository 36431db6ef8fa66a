"""Issue 5: the teachers users have, YAML recipes, best checkpoints, TensorBoard events and DDP via torchrun."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgeseg.arch import create_model
from edgeseg.checkpoint import load_model
from edgeseg.cli.main import cli
from edgeseg.distillation.api import distill
from edgeseg.errors import ConfigError

TINY = dict(student="mobilenetv3-small", epochs=1, batch_size=4, tensorboard=False)


def test_teacher_as_torch_export_program(tiny_teacher, tiny_data, tmp_path):
    teacher = load_model(tiny_teacher).model.eval()
    program = torch.export.export(teacher, (torch.zeros(2, 3, 64, 64),))  # static batch 2, unlike the loader's 4
    path = tmp_path / "teacher.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(path)
    assert loaded.arch == "torch.export" and loaded.num_classes == 8
    batch = torch.randn(4, 3, 64, 64)
    torch.testing.assert_close(loaded.model(batch), teacher(batch), rtol=1e-4, atol=1e-4)
    meta = distill(str(path), str(tiny_data), str(tmp_path / "s.pt"), **TINY)
    assert meta["training"]["distill"]["teacher_arch"] == "torch.export"


def test_teacher_as_state_dict_with_teacher_arch(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = create_model("mobilenetv3-small", 8)
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ConfigError, match="bare state_dict"):
        distill(str(path), str(tiny_data), str(tmp_path / "a.pt"), **TINY)
    meta = distill(str(path), str(tiny_data), str(tmp_path / "b.pt"), teacher_arch="mobilenetv3-small", **TINY)
    assert meta["training"]["distill"]["teacher_arch"] == "lraspp-mobilenetv3-small"


def test_teacher_as_torchvision_model_by_name(tiny_data, tmp_path):
    from torchvision.models.segmentation import fcn_resnet50

    # torchvision's own layout, auxiliary head included, as its published weight files are
    net = fcn_resnet50(weights=None, weights_backbone=None, num_classes=8, aux_loss=True).eval()
    path = tmp_path / "fcn.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path, arch="torchvision:fcn_resnet50", num_classes=8)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.model(x), net(x)["out"])
    with pytest.raises(ConfigError, match="predict 8 classes but 11"):
        load_model(path, arch="torchvision:fcn_resnet50", num_classes=11)
    with pytest.raises(ConfigError, match="not a torchvision segmentation model"):
        load_model(path, arch="torchvision:resnet50", num_classes=8)


def test_wrapped_torchvision_arch_accepts_plain_torchvision_weights(tmp_path):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5).eval()
    path = tmp_path / "lraspp.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path, arch="mobilenetv3", num_classes=5)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.model(x), net(x)["out"])


def test_recipe_sets_options_and_command_line_wins(tiny_teacher, tiny_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("distill:\n  student: mobilenetv3-small\n  epochs: 3\n  batch-size: 4\n  loss: kl+cwd\n"
                      "  loss_weights: {cwd: 2.5}\n  temperature: 2.0\n  tensorboard: false\n")
    out = tmp_path / "s.pt"
    result = CliRunner().invoke(cli, ["distill", str(tiny_teacher), "--data", str(tiny_data), "--out", str(out),
                                      "--recipe", str(recipe), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    training = json.loads(out.with_name("s.pt.json").read_text())["training"]
    assert training["config"]["epochs"] == 1  # the command line wins
    assert training["distill"]["weights"] == {"kl": 1.0, "cwd": 2.5}
    assert training["distill"]["temperature"] == 2.0


def test_recipe_with_an_unknown_option_is_one_clear_error(tiny_teacher, tiny_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("distill:\n  epochs: 1\n  learning_rate: 0.1\n")
    result = CliRunner().invoke(cli, ["distill", str(tiny_teacher), "--data", str(tiny_data), "--recipe",
                                      str(recipe), "--out", str(tmp_path / "s.pt")])
    assert result.exit_code == 2
    assert "sets 'learning_rate' under 'distill:'" in result.output
    assert not (tmp_path / "s.pt").exists()


def test_best_checkpoint_and_tensorboard_events(tiny_data, tmp_path):
    from edgeseg.training.api import train

    out = tmp_path / "m.pt"
    train("unet", str(tiny_data), str(out), epochs=2, batch_size=4, val_every=1,
          arch_args={"base_channels": 8, "encoder_depth": 2})
    best = tmp_path / "m.best.pt"
    history = json.loads(out.with_name("m.pt.json").read_text())["training"]
    best_meta = json.loads(best.with_name("m.best.pt.json").read_text())["training"]
    assert best_meta["val_miou"] == max(r["val_miou"] for r in load_model(out).meta["history"])
    assert history["val_miou"] is not None and load_model(best).arch == "unet"
    events = list((tmp_path / "m.pt.tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo(tiny_data, tmp_path):
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "edgeseg.cli", "train", "--arch", "unet", "--arch-arg", "base_channels=8",
               "--arch-arg", "encoder_depth=2", "--data", str(tiny_data), "--out", str(out), "--epochs", "6",
               "--batch-size", "2", "--lr", "0.005", "--no-tensorboard", "--val-every", "3"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(Path(str(out) + ".log.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6  # one writer (rank 0), one row per epoch
    assert float(rows[-1]["ce"]) < 0.8 * float(rows[0]["ce"])  # the averaged loss goes down
    loaded = load_model(out)
    assert loaded.arch == "unet" and loaded.meta["history"][-1]["val_miou"] is not None
    # only rank 0 talks and writes
    assert "Training unet" in done.stderr and done.stderr.count("Training unet") == 1


def test_recipe_maps_dicts_to_repeatable_options(tmp_path):
    from edgeseg.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  arch: unet\n  arch_args: {base_channels: 16}\n  batch-size: 4\n")
    options = load_recipe(recipe, "train", ["arch", "arch_arg", "batch_size"])
    assert options == {"arch": "unet", "arch_arg": ["base_channels=16"], "batch_size": 4}
    recipe.write_text("distill:\n  student: unet\n  student_args: {base_channels: 8, encoder_depth: 3}\n")
    assert load_recipe(recipe, "distill", ["student", "student_arg"]) == {
        "student": "unet", "student_arg": ["base_channels=8", "encoder_depth=3"]}
    recipe.write_text("train:\n  arch: unet\n  arch_args: {base_channels: 16}\n  batch-size: 4\n")
    with pytest.raises(ConfigError, match="no 'distill:' section"):
        load_recipe(recipe, "distill", ["epochs"])
    repo_recipe = Path(__file__).resolve().parents[1] / "models" / "camvid-distill.yaml"
    from edgeseg.cli.distill import distill_command
    from edgeseg.cli.train import train_command

    for section, command in (("train", train_command), ("distill", distill_command)):
        assert load_recipe(repo_recipe, section, [p.name for p in command.params])  # the committed recipe is valid


def test_student_args_shape_the_student_and_rebuild_it_from_the_checkpoint(tiny_teacher, tiny_data, tmp_path):
    out = tmp_path / "u4.pt"
    result = CliRunner().invoke(cli, ["distill", str(tiny_teacher), "--data", str(tiny_data), "--out", str(out),
                                      "--student", "unet", "--student-arg", "base_channels=4",
                                      "--student-arg", "encoder_depth=2", "--epochs", "1", "--batch-size", "4",
                                      "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    loaded = load_model(out)
    assert loaded.arch == "unet"
    # the narrow two-stage U-Net, not the registry's default (base 32, depth 4)
    widths = [m.out_channels for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(widths) == 16 and len(widths) < len([m for m in create_model("unet", 8).modules()
                                                     if isinstance(m, torch.nn.Conv2d)])
    bad = CliRunner().invoke(cli, ["distill", str(tiny_teacher), "--data", str(tiny_data), "--out",
                                   str(tmp_path / "bad.pt"), "--student", "unet", "--student-arg", "base_channels"])
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output and not (tmp_path / "bad.pt").exists()
