import json

import pytest
import torch

from edgeseg.arch import create_model, list_models
from edgeseg.arch.profile import count_params
from edgeseg.checkpoint import load_model
from edgeseg.pruning.api import prune, prune_model
from edgeseg.pruning.importance import class_layers


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
    def weights(seed):
        torch.manual_seed(0)
        model = create_model("unet", 4, base_channels=8, encoder_depth=2)
        prune_model(model, 4, 64, 64, ratio=0.5, importance="random", seed=seed)
        return [t.clone() for t in model.state_dict().values()]

    # the channel counts are fixed by the ratio; which channels survive is what the seed decides
    same, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(a, b) for a, b in zip(same, again))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(same, other))


def test_prune_with_round_to_and_finetune(tiny_student, tiny_data, tmp_path):
    out = tmp_path / "ft.pt"
    meta = prune(str(tiny_student), str(out), ratio=0.3, round_to=4, finetune_epochs=1, data=str(tiny_data),
                 batch_size=4)
    assert 0 <= meta["prune"]["val_miou"] <= 100
    model = load_model(out).model
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels != 8
              and m.groups == 1]
    assert all(w % 4 == 0 for w in widths)
    # the fine-tuning really trained: same pruning without it leaves other weights
    prune(str(tiny_student), str(tmp_path / "raw.pt"), ratio=0.3, round_to=4, finetune_epochs=0, batch_size=4)
    raw = load_model(tmp_path / "raw.pt").model.state_dict()
    tuned = model.state_dict()
    assert raw.keys() == tuned.keys() and any(not torch.equal(raw[k], tuned[k]) for k in raw if "weight" in k)


def test_killed_finetuning_resumes_where_it_was(tiny_student, tiny_data, tmp_path, monkeypatch):
    """Fine-tuning writes OUT.state every epoch; --resume after a kill ends with the weights of an unbroken run."""
    from edgeseg.errors import ConfigError
    from edgeseg.training import loop

    options = dict(ratio=0.3, round_to=4, finetune_epochs=2, data=str(tiny_data), batch_size=4)
    prune(str(tiny_student), str(tmp_path / "straight.pt"), **options)
    with pytest.raises(ConfigError, match="found no fine-tuning state"):
        prune(str(tiny_student), str(tmp_path / "killed.pt"), resume=True, **options)
    with pytest.raises(ConfigError, match="add the run's --finetune-epochs"):
        prune(str(tiny_student), str(tmp_path / "killed.pt"), resume=True, ratio=0.3)
    with pytest.raises(ConfigError, match="cannot be used with --target-latency-ms"):
        prune(str(tiny_student), str(tmp_path / "killed.pt"), resume=True, target_latency_ms=5.0, **options)

    write_csv = loop._write_csv

    def killed_after_first_epoch(path, history):
        write_csv(path, history)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop, "_write_csv", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        prune(str(tiny_student), str(tmp_path / "killed.pt"), **options)
    monkeypatch.setattr(loop, "_write_csv", write_csv)
    assert not (tmp_path / "killed.pt").exists() and (tmp_path / "killed.pt.state").is_file()
    assert (tmp_path / "killed.pt.log.csv").read_text().count("\n") == 2  # header + epoch 1
    epochs_trained = []
    monkeypatch.setattr(loop, "_write_csv", lambda path, history: (epochs_trained.append(history[-1]["epoch"]),
                                                                   write_csv(path, history)))
    prune(str(tiny_student), str(tmp_path / "killed.pt"), resume=True, **options)
    assert epochs_trained == [2]  # the resumed run trained only the epoch the killed one had not finished
    assert not (tmp_path / "killed.pt.state").exists() and not (tmp_path / "straight.pt.state").exists()
    assert [record["epoch"] for record in load_model(tmp_path / "killed.pt").meta["finetune_history"]] == [1, 2]
    straight = load_model(tmp_path / "straight.pt").model.state_dict()
    resumed = load_model(tmp_path / "killed.pt").model.state_dict()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


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


def _two_layer_net():
    """conv(3->8) + BN + ReLU + classifier conv(8->4); channels 0-3 have big weights but feed nothing."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        net[0].weight[:4] *= 10.0
        net[3].weight[:, :4] = 0.0
    return net


def _batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, 16, 16, generator=generator), torch.randint(0, 4, (4, 16, 16), generator=generator))
            for _ in range(2)]


def test_taylor_importance_removes_channels_the_loss_does_not_depend_on():
    from edgeseg.pruning.importance import accumulate_gradients

    by_magnitude = prune_model(_two_layer_net(), 4, 16, 16, ratio=0.5)
    assert (by_magnitude[3].weight.abs().sum((0, 2, 3)) == 0).all()  # magnitude keeps the big dead channels

    net = _two_layer_net()
    prune_model(net, 4, 16, 16, ratio=0.5, importance="taylor",
                gradients=lambda model: accumulate_gradients(model, _batches(), ignore_index=255))
    assert net[3].in_channels == 4 and (net[3].weight.abs().sum((0, 2, 3)) > 0).all()  # taylor drops them
    assert all(p.grad is None for p in net.parameters())  # the ranking gradients are not left behind


def test_taylor_without_data_is_a_clear_error(tiny_student, tmp_path):
    from edgeseg.errors import ConfigError

    with pytest.raises(ConfigError, match="--importance taylor needs --data"):
        prune(str(tiny_student), str(tmp_path / "p.pt"), importance="taylor")
    with pytest.raises(ConfigError, match="add --importance bn-scale"):
        prune(str(tiny_student), str(tmp_path / "p.pt"), sparsity_epochs=1, data="synthetic")
    assert not (tmp_path / "p.pt").exists()


def test_prune_with_taylor_on_data(tiny_student, tiny_data, tmp_path):
    meta = prune(str(tiny_student), str(tmp_path / "t.pt"), ratio=0.3, importance="taylor", data=str(tiny_data),
                 taylor_images=4, batch_size=2)
    assert meta["prune"]["importance"] == "taylor" and meta["prune"]["channels"]
    assert load_model(tmp_path / "t.pt").model(torch.zeros(1, 3, 64, 64)).shape == (1, 8, 64, 64)


def test_sparsity_phase_shrinks_batchnorm_scales(tiny_student, tiny_data):
    from edgeseg.pruning.importance import bn_l1_penalty
    from edgeseg.data.dataset import ClassCount
    from edgeseg.pruning.training import load_prune_data, sparsity_phase

    def l1_after(strength):
        loaded = load_model(tiny_student)
        data = load_prune_data(str(tiny_data), loaded.input_spec, ClassCount(loaded.num_classes, "the model"))
        history = sparsity_phase(loaded.model, data, loaded.num_classes, epochs=2, strength=strength, batch_size=2,
                                 lr=5e-2, seed=0, threads=None)
        assert "bn_l1" in history[-1]
        return bn_l1_penalty(loaded.model).item()

    assert l1_after(1e-2) < 0.8 * l1_after(0.0)


def test_network_slimming_end_to_end(tiny_student, tiny_data, tmp_path):
    meta = prune(str(tiny_student), str(tmp_path / "slim.pt"), ratio=0.3, importance="bn-scale", sparsity_epochs=1,
                 sparsity=1e-3, data=str(tiny_data), batch_size=4)
    assert meta["prune"]["sparsity_epochs"] == 1 and meta["prune"]["sparsity"] == 1e-3
    assert load_model(tmp_path / "slim.pt").meta["sparsity_history"]


def test_latency_target_stops_at_the_first_confirmed_step():
    from edgeseg.arch.profile import count_macs
    from edgeseg.pruning.schedule import prune_to_target

    torch.manual_seed(0)
    model = create_model("unet", 4, base_channels=16, encoder_depth=2)
    start = count_macs(model, 64, 64)
    calls = []

    def fake_latency(net):  # proportional to MACs, but the first reading under the target is a lucky one
        calls.append(1)
        ms = 10.0 * count_macs(net, 64, 64) / start
        return ms - 3.0 if len(calls) == 1 else ms

    trace = []
    steps = prune_to_target(model, 4, 64, 64, latency_ms=fake_latency, target_latency_ms=7.5, trace=trace,
                            steps=20)
    assert steps == len(trace) and trace[-1]["latency_ms"] <= 7.5
    assert all(record["latency_ms"] > 7.5 for record in trace[:-1])
    assert trace[0]["latency_ms"] > 7.5  # the lucky first reading was re-measured, not believed


def test_prune_to_a_measured_latency_on_onnxruntime(tiny_student, tmp_path):
    meta = prune(str(tiny_student), str(tmp_path / "fast.pt"), target_latency_ms=1e4, backend="onnxruntime")
    latency = meta["prune"]["latency"]
    assert latency["backend"] == "onnxruntime" and latency["before_ms"] > 0 and latency["after_ms"] > 0
    assert len(latency["steps"]) == 1 and latency["steps"][0]["macs"] < meta["prune"]["macs_before"]
    assert meta["prune"]["ratio"] is None and meta["prune"]["target_latency_ms"] == 1e4


def test_latency_on_tensorrt_without_it_is_a_clear_error(tiny_student, tmp_path):
    from edgeseg.engine.api import tensorrt_available
    from edgeseg.errors import ConfigError

    if tensorrt_available()[0]:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(ConfigError, match="--backend tensorrt needs TensorRT"):
        prune(str(tiny_student), str(tmp_path / "p.pt"), target_latency_ms=5, backend="tensorrt")
    assert not (tmp_path / "p.pt").exists()
