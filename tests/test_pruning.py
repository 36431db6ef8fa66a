import json

import pytest
import torch

from edgeseg.arch import create_model, list_models
from edgeseg.arch.profile import count_params
from edgeseg.checkpoint import load_model
from edgeseg.pruning.api import class_layers, prune, prune_model


@pytest.mark.parametrize("name", [e.name for e in list_models()])
def test_every_architecture_prunes_and_still_runs(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    classifiers = class_layers(model, 5)
    before = count_params(model)
    prune_model(model, 5, 64, 64, ratio=0.3)
    assert count_params(model) < 0.85 * before
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5, 64, 64)
    for layer in classifiers:  # the layers found before pruning still output every class
        assert layer.weight.shape[0] == 5


def test_pruned_checkpoint_reloads_without_user_code(tiny_student, tmp_path):
    out = tmp_path / "pruned.pt"
    prune(str(tiny_student), str(out), ratio=0.4)
    loaded = load_model(out)
    x = torch.randn(1, 3, 64, 64)
    reference = load_model(tiny_student).model
    assert count_params(loaded.model) < count_params(reference)
    with torch.no_grad():
        assert loaded.model(x).shape == reference(x).shape
    meta = json.loads(out.with_name("pruned.pt.json").read_text())
    assert meta["prune"]["ratio"] == 0.4 and meta["prune"]["channels"]
    before, after = next(iter(meta["prune"]["channels"].values()))
    assert after < before


def test_pruning_is_deterministic(tmp_path):
    def counts():
        torch.manual_seed(0)
        model = create_model("unet", 4, base_channels=8, encoder_depth=2)
        prune_model(model, 4, 64, 64, ratio=0.5, importance="random", seed=1)
        return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

    assert counts() == counts()


def test_prune_with_round_to_and_finetune(tiny_student, tiny_data, tmp_path):
    out = tmp_path / "ft.pt"
    meta = prune(str(tiny_student), str(out), ratio=0.3, round_to=4, finetune_epochs=1, data=str(tiny_data),
                 batch_size=4)
    assert meta["prune"]["val_miou"] is not None
    model = load_model(out).model
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels != 8
              and m.groups == 1]
    assert all(w % 4 == 0 for w in widths)


def test_prune_to_a_mac_target_lands_just_under_it():
    from edgeseg.arch.profile import count_macs
    from edgeseg.pruning.api import prune_to_target

    torch.manual_seed(0)
    model = create_model("unet", 4, base_channels=16, encoder_depth=2)
    target = count_macs(model, 64, 64) // 2
    prune_to_target(model, 4, 64, 64, target_macs=target, steps=20)
    macs = count_macs(model, 64, 64)
    assert 0.8 * target <= macs <= target  # under the target, not far below it
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_unreachable_target_is_a_clear_error():
    from edgeseg.errors import ConfigError
    from edgeseg.pruning.api import prune_to_target

    model = create_model("unet", 4, base_channels=8, encoder_depth=2)
    with pytest.raises(ConfigError, match="does not reach the target"):
        prune_to_target(model, 4, 64, 64, target_params=10, max_ratio=0.5, steps=3)


def test_bn_scale_importance_prunes_the_smallest_scales(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet", 4, base_channels=8, encoder_depth=2).eval()
    bn = model.encoder[0][1]
    with torch.no_grad():
        bn.weight.copy_(torch.arange(1, 9, dtype=torch.float32))  # channel i has scale i+1
    kept_before = bn.weight.clone()
    prune_model(model, 4, 64, 64, ratio=0.5, importance="bn-scale")
    assert set(bn.weight.tolist()) == set(kept_before[4:].tolist())  # the four largest scales survive


def test_prune_command_with_a_parameter_target(tiny_student, tmp_path):
    before = json.loads(tiny_student.with_name("student.pt.json").read_text())["model"]["params"]
    meta = prune(str(tiny_student), str(tmp_path / "p.pt"), target_params=0.6 * before)
    assert meta["model"]["params"] <= 0.6 * before and meta["prune"]["target_params"] == 0.6 * before
    assert load_model(tmp_path / "p.pt").model(torch.zeros(1, 3, 64, 64)).shape == (1, 8, 64, 64)
