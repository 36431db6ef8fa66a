"""Class-weighted cross-entropy: the frequencies, the weights, the loss, and how train and prune record them."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeseg.errors import ConfigError
from edgeseg.training import class_weights as weighting


def test_frequencies_follow_eigen_and_fergus_on_a_hand_made_example():
    # image 1: 6 pixels of class 0, 2 of class 1, 2 ignored; image 2: 4 of class 0, 4 of class 2
    first = np.array([[0, 0, 0, 1, 255], [0, 0, 0, 1, 255]], np.uint8)
    second = np.array([[0, 0, 2, 2], [0, 0, 2, 2]], np.uint8)
    freq = weighting.frequencies([first, second], num_classes=4, ignore_index=255)
    # class 0: 10 px over the 8 + 8 labelled pixels of both images; class 1: 2 / 8; class 2: 4 / 8; class 3: absent
    assert freq.tolist() == pytest.approx([10 / 16, 2 / 8, 4 / 8, 0.0])


def test_median_frequency_weights_and_their_square_root():
    freq = np.array([0.625, 0.25, 0.5, 0.0])
    median = 0.5  # of the present classes only
    assert weighting.from_frequencies(freq, "median-frequency") == pytest.approx([median / 0.625, 2.0, 1.0, 0.0])
    assert weighting.from_frequencies(freq, "sqrt-median-frequency") == pytest.approx(
        [math.sqrt(median / 0.625), math.sqrt(2.0), 1.0, 0.0])


@pytest.mark.parametrize("text, words", [
    ("1,2", "gives 2 weight(s) but the model has 3 classes"),
    ("1,-1,2", "not a positive number"),
    ("0,0,0", "not a positive number"),
    ("1,0,2", "not a positive number"),
    ("1,x,2", "neither one of"),
])
def test_bad_explicit_weights_are_refused_in_one_sentence(text, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        weighting.parse(text, 3)


def test_an_unknown_mode_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="'balanced' is not one of none, median-frequency, sqrt-median-frequency"):
        weighting.check("balanced")
    weighting.check("sqrt-median-frequency")
    weighting.check("1,2,3")
    assert weighting.parse("2,1,0.5", 3) == [2.0, 1.0, 0.5]
    weighting.check([2, 1, 0.5])  # Python callers may give a list
    assert weighting.parse([2, 1, 0.5], 3) == [2.0, 1.0, 0.5]


def _weighted_nll(logits, labels, weights, ignore_index):
    """The weighted mean of the per-pixel negative log-likelihoods, computed without F.cross_entropy."""
    log_p = logits.log_softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).double()
    flat = labels.reshape(-1)
    keep = flat != ignore_index
    picked = -log_p[keep, flat[keep]]
    w = torch.tensor(weights, dtype=torch.float64)[flat[keep]]
    return float((w * picked).sum() / w.sum())


def test_train_loss_weighs_each_pixel_by_its_class():
    from edgeseg.training.api import cross_entropy_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0, :2] = 255
    weights = [0.5, 1.0, 4.0]
    weighted, _ = cross_entropy_loss(255, weights)(logits, None, labels)
    plain, _ = cross_entropy_loss(255)(logits, None, labels)
    assert float(weighted) == pytest.approx(_weighted_nll(logits, labels, weights, 255), rel=1e-5)
    assert float(plain) == pytest.approx(_weighted_nll(logits, labels, [1.0, 1.0, 1.0], 255), rel=1e-5)
    assert abs(float(weighted) - float(plain)) > 1e-3


def test_prune_fine_tuning_loss_weighs_its_cross_entropy():
    from edgeseg.distillation.api import kd_loss

    torch.manual_seed(1)
    teacher = torch.nn.Conv2d(3, 3, 1)
    images = torch.randn(2, 3, 4, 5)
    student_logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    weights = [3.0, 1.0, 0.25]
    _, parts = kd_loss(teacher, 255, 4.0, 1.0, weights)(student_logits, images, labels)
    assert parts["ce"] == pytest.approx(_weighted_nll(student_logits, labels, weights, 255), rel=1e-5)


def _frequencies_read_here(split_folder: Path, num_classes: int, ignore: int = 255) -> np.ndarray:
    class_pixels, image_pixels = np.zeros(num_classes), np.zeros(num_classes)
    for path in sorted((split_folder / "labels").glob("*.png")):
        label = np.asarray(Image.open(path)).ravel()
        label = label[label != ignore]
        for c in np.unique(label):
            class_pixels[c] += (label == c).sum()
            image_pixels[c] += label.size
    return class_pixels / np.where(image_pixels > 0, image_pixels, 1)


def _train_tiny(tiny_data, path: Path, mode: str) -> list:
    """Train a tiny U-Net one epoch with ``mode``; return the weights expected from the label files read here."""
    from edgeseg.training.api import train

    train("unet", str(tiny_data), str(path), epochs=1, batch_size=4, class_weights=mode,
          arch_args={"base_channels": 8, "encoder_depth": 3}, tensorboard=False)
    freq = _frequencies_read_here(tiny_data / "train", 8)
    median = np.median(freq[freq > 0])
    full = [median / f if f > 0 else 0.0 for f in freq]
    return full if mode == "median-frequency" else [math.sqrt(w) for w in full]


def test_train_records_the_weights_of_the_training_labels_and_prune_fine_tunes_with_them(tiny_data, tmp_path,
                                                                                         monkeypatch):
    from edgeseg.checkpoint import load_model
    from edgeseg.pruning.api import prune

    model = tmp_path / "model.pt"
    expected = _train_tiny(tiny_data, model, "median-frequency")
    sidecar = json.loads(Path(str(model) + ".json").read_text())
    recorded = sidecar["training"]["class_weights"]
    assert recorded["mode"] == "median-frequency"
    assert recorded["weights"] == pytest.approx(expected, rel=1e-5)
    assert load_model(model).meta["class_weights"]["weights"] == pytest.approx(expected, rel=1e-5)

    inherited = tmp_path / "pruned.pt"
    from edgeseg.training import loop

    seen = _record_loss_settings(monkeypatch, loop)  # prune's fine-tuning imports fit from the loop when it runs
    prune(str(model), str(inherited), ratio=0.25, finetune_epochs=1, data=str(tiny_data), batch_size=4)
    assert seen[-1]["class_weights"] == pytest.approx(expected, rel=1e-5)
    meta = load_model(inherited).meta
    assert meta["prune"]["class_weights"]["mode"] == "median-frequency"
    assert meta["prune"]["class_weights"]["weights"] == pytest.approx(expected, rel=1e-5)

    plain = tmp_path / "plain.pt"
    prune(str(model), str(plain), ratio=0.25, finetune_epochs=1, data=str(tiny_data), batch_size=4,
          class_weights="none")
    assert load_model(plain).meta["prune"]["class_weights"] == {"mode": "none", "weights": None}


def test_the_cli_refuses_a_wrong_count_of_weights_in_one_sentence(tiny_data, tmp_path):
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    out = tmp_path / "m.pt"
    result = CliRunner().invoke(cli, ["train", "--arch", "unet", "--data", str(tiny_data), "--out", str(out),
                                      "--epochs", "1", "--class-weights", "1,2"])
    assert result.exit_code != 0
    assert "--class-weights gives 2 weight(s) but the model has 8 classes; give one weight per class." in result.output
    assert not out.exists()


def test_taylor_gradients_are_those_of_the_weighted_loss():
    from edgeseg.pruning.importance import accumulate_gradients

    torch.manual_seed(2)
    model = torch.nn.Conv2d(3, 3, 1)
    images = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    weights = [0.2, 1.0, 5.0]
    accumulate_gradients(model, [(images, labels)], 255, weights)
    got = model.weight.grad.clone()
    model.zero_grad()
    logits = model(images)
    log_p = logits.log_softmax(1).permute(0, 2, 3, 1).reshape(-1, 3)
    flat = labels.reshape(-1)
    w = torch.tensor(weights)[flat]
    ((w * -log_p[torch.arange(flat.numel()), flat]).sum() / w.sum()).backward()
    assert torch.allclose(got, model.weight.grad, atol=1e-6)
    accumulate_gradients(model, [(images, labels)], 255)
    assert not torch.allclose(got, model.weight.grad, atol=1e-4)


def _record_loss_settings(monkeypatch, module) -> list:
    """Wrap ``module.fit`` so each call's loss_settings (what a resume is checked against) is recorded."""
    seen, real = [], module.fit

    def recording(*args, **kwargs):
        seen.append(kwargs.get("loss_settings"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "fit", recording)
    return seen


def test_distill_weighs_its_cross_entropy_as_the_teacher_was_trained(tiny_data, tmp_path, monkeypatch):
    from edgeseg.checkpoint import load_model
    from edgeseg.distillation import api
    from edgeseg.distillation.api import distill
    from edgeseg.distillation.objective import DistillationObjective

    teacher = tmp_path / "teacher.pt"
    expected = _train_tiny(tiny_data, teacher, "sqrt-median-frequency")
    seen = _record_loss_settings(monkeypatch, api)
    student = tmp_path / "student.pt"
    distill(str(teacher), str(tiny_data), str(student), student="unet", student_args={"base_channels": 4,
            "encoder_depth": 2}, epochs=1, batch_size=4, tensorboard=False)
    recorded = load_model(student).meta["class_weights"]
    assert recorded["mode"] == "sqrt-median-frequency" and recorded["weights"] == pytest.approx(expected, rel=1e-5)
    assert seen[0]["class_weights"] == pytest.approx(expected, rel=1e-5)  # a resume is checked against them
    plain = tmp_path / "plain.pt"
    distill(str(teacher), str(tiny_data), str(plain), student="unet", student_args={"base_channels": 4,
            "encoder_depth": 2}, epochs=1, batch_size=4, tensorboard=False, class_weights="none")
    assert load_model(plain).meta["class_weights"] == {"mode": "none", "weights": None}

    # the objective's cross-entropy term is the weighted one
    torch.manual_seed(3)
    net = torch.nn.Conv2d(3, 8, 1)
    objective = DistillationObjective(net, torch.nn.Conv2d(3, 8, 1), {"kl": 1.0}, ignore_index=255, temperature=4.0,
                                      class_weights=expected)
    logits, images = torch.randn(2, 8, 4, 5), torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 8, (2, 4, 5))
    _, parts = objective(logits, images, labels)
    assert parts["ce"] == pytest.approx(_weighted_nll(logits, labels, expected, 255), rel=1e-5)


def test_prune_refuses_class_weights_it_would_not_use(tiny_student, tmp_path):
    from edgeseg.pruning.api import prune

    with pytest.raises(ConfigError, match="^--class-weights weighs the loss of taylor's gradients"):
        prune(str(tiny_student), str(tmp_path / "p.pt"), ratio=0.25, class_weights="median-frequency")
    assert not (tmp_path / "p.pt").exists()


def test_the_sparsity_phase_weighs_its_cross_entropy(monkeypatch, tiny_data):
    from edgeseg.pruning import training

    seen = {}

    def fake_fit(net, train_set, val_set, loss_fn, config, **kwargs):
        torch.manual_seed(4)
        logits, labels = torch.randn(2, 8, 4, 5), torch.randint(0, 8, (2, 4, 5))
        _, parts = loss_fn(logits, None, labels)
        seen["ce"], seen["expected"] = parts["ce"], _weighted_nll(logits, labels, weights, 255)
        return []

    weights = [0.5, 1, 1, 2, 1, 1, 3, 4]
    monkeypatch.setattr("edgeseg.training.loop.fit", fake_fit)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.BatchNorm2d(8))
    data = training.PruneData(None, None, None, types_info(), None)
    training.sparsity_phase(net, data, 8, epochs=1, strength=1e-4, batch_size=2, lr=None, seed=0, threads=None,
                            class_weights=weights)
    assert seen["ce"] == pytest.approx(seen["expected"], rel=1e-5)


def types_info():
    from edgeseg.spec import DatasetInfo

    return DatasetInfo(num_classes=8, ignore_index=255)


def test_a_train_resumed_with_other_class_weights_is_refused(tiny_data, tmp_path, monkeypatch):
    """The weights are part of the loss: a killed run resumed with another --class-weights would change it half-way."""
    from edgeseg.training import api

    real, steps = api.cross_entropy_loss, {"n": 0}
    per_epoch = len(list((tiny_data / "train" / "images").iterdir())) // 4

    def dies_in_the_second_epoch(*args):
        loss = real(*args)

        def counted(*inputs):
            steps["n"] += 1
            if steps["n"] > per_epoch:
                raise KeyboardInterrupt("killed")
            return loss(*inputs)
        return counted

    model = tmp_path / "model.pt"
    options = dict(epochs=2, batch_size=4, arch_args={"base_channels": 8, "encoder_depth": 3}, tensorboard=False)
    monkeypatch.setattr(api, "cross_entropy_loss", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        api.train("unet", str(tiny_data), str(model), class_weights="median-frequency", **options)
    monkeypatch.setattr(api, "cross_entropy_loss", real)
    with pytest.raises(ConfigError, match=r"model.pt.state was trained with class weights \[[0-9., ]+\], this run "
                                          r"asks for none; resuming would change the loss half-way\. Resume with "
                                          r"the run's own options \(class_weights=\)"):
        api.train("unet", str(tiny_data), str(model), resume=True, **options)
    with pytest.raises(ConfigError, match="this run asks for \\[1, 2, 1, 1, 1, 1, 1, 1\\]"):
        api.train("unet", str(tiny_data), str(model), resume=True, class_weights="1,2,1,1,1,1,1,1", **options)
    api.train("unet", str(tiny_data), str(model), resume=True, class_weights="median-frequency", **options)
    assert model.exists()


def test_prune_resumed_with_other_class_weights_is_refused_before_pruning(tiny_data, tmp_path, monkeypatch):
    from edgeseg.pruning import api

    model, out = tmp_path / "model.pt", tmp_path / "pruned.pt"
    expected = _train_tiny(tiny_data, model, "median-frequency")
    killed_run = {"loss_settings": {"class_weights": [float(w) for w in expected]}}
    torch.save(killed_run, tmp_path / "pruned.pt.state")
    pruned = []
    monkeypatch.setattr(api, "layer_structure", lambda net: pruned.append(net) or {})
    with pytest.raises(ConfigError, match=r"pruned.pt.state was trained with class weights \[.*\], this run asks "
                                          r"for none"):
        api.prune(str(model), str(out), ratio=0.25, finetune_epochs=1, data=str(tiny_data), batch_size=4,
                  class_weights="none", resume=True)
    assert not pruned  # refused before any pruning work
