import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from edgeseg.arch import create_model
from edgeseg.checkpoint import load_model
from edgeseg.data.dataset import resolve_split
from edgeseg.data.torch_dataset import AugmentConfig, SegmentationDataset, poly_lr
from edgeseg.errors import DataError
from edgeseg.spec import InputSpec
from edgeseg.training.loop import TrainConfig, fit


def test_poly_schedule_with_warmup():
    assert poly_lr(1.0, 0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert poly_lr(1.0, 10, 100, warmup_steps=10) == pytest.approx(1.0)
    assert poly_lr(1.0, 100, 100) == 0.0


def test_augmentation_moves_image_and_mask_together(tiny_data):
    split = resolve_split(tiny_data, "train")
    dataset = SegmentationDataset(split, InputSpec(64, 64), AugmentConfig(scale=(0.5, 0.5), brightness=0,
                                                                           contrast=0, saturation=0))
    # an image whose colour says the class of each pixel: after the joint scale/pad/crop/flip they must still agree
    colours = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)
    dataset.images[0] = colours[dataset.labels[0]]
    for seed in range(4):  # crops and flips differ by seed
        np.random.seed(seed)
        image, label = dataset[0]
        assert image.shape == (3, 64, 64) and label.shape == (64, 64)
        rgb = (image * dataset.std + dataset.mean).permute(1, 2, 0).numpy()
        ignored = label.numpy() == split.info.ignore_index
        # scale 0.5 then padding: the padded area is ignored in the mask and has the mean colour in the image
        assert ignored.mean() >= 0.7
        padded = np.abs(rgb - dataset.mean.view(3).numpy()).max(-1) < 0.5
        assert padded[ignored].mean() > 0.9
        # elsewhere each pixel has its label's colour (bilinear vs nearest may differ only on class borders)
        kept = ~ignored
        match = np.abs(rgb[kept] - colours[label.numpy()[kept]]).max(-1) < 1.0
        assert match.mean() > 0.8, seed


def test_fit_reduces_the_loss(tiny_data):
    split = resolve_split(tiny_data, "train")
    dataset = SegmentationDataset(split, InputSpec(64, 64))
    torch.manual_seed(0)
    model = create_model("unet", split.info.num_classes, base_channels=8, encoder_depth=2)

    def loss_fn(logits, _images, labels):
        loss = F.cross_entropy(logits, labels, ignore_index=255)
        return loss, {"ce": loss.item()}

    history = fit(model, dataset, None, loss_fn, TrainConfig(epochs=8, batch_size=4, lr=5e-3), num_classes=8,
                  ignore_index=255, description="test")
    assert history[-1]["ce"] < 0.8 * history[0]["ce"]


def test_train_writes_checkpoint_and_sidecar(tiny_teacher):
    meta = json.loads(tiny_teacher.with_name("teacher.pt.json").read_text())
    assert meta["kind"] == "checkpoint" and meta["stage"] == "train"
    assert meta["input"]["height"] == 64 and meta["dataset"]["num_classes"] == 8
    model = load_model(tiny_teacher).model
    assert meta["model"]["params"] == sum(p.numel() for p in model.parameters())
    from edgeseg.arch.profile import count_macs

    assert meta["model"]["macs"] == pytest.approx(count_macs(model, 64, 64), rel=1e-6)
    assert "val_miou" in meta["training"]
    assert load_model(tiny_teacher).arch == "unet"


def test_distilled_student_records_its_teacher(tiny_student):
    meta = json.loads(tiny_student.with_name("student.pt.json").read_text())
    assert meta["model"]["arch"] == "lraspp-mobilenetv3-small"
    assert meta["parent"]["artifact"] == "teacher.pt" and meta["training"]["distill"]["loss"] == "ce+kl"


def test_distill_refuses_teacher_with_other_classes(tiny_data, tmp_path):
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.distillation.api import distill

    teacher = tmp_path / "t.pt"
    save_checkpoint(teacher, create_model("unet", 3, base_channels=8, encoder_depth=2), arch="unet", num_classes=3,
                    input_spec=InputSpec(64, 64), dataset=None, arch_args={"base_channels": 8, "encoder_depth": 2})
    with pytest.raises(DataError) as caught:
        distill(str(teacher), str(tiny_data), str(tmp_path / "s.pt"), epochs=1)
    yaml_path = tiny_data / "dataset.yaml"
    assert str(caught.value) == (f"Teacher {teacher} says 3 classes but {yaml_path} says 8; fix num_classes in "
                                 f"{yaml_path}, or use a teacher trained for this data.")
    assert not (tmp_path / "s.pt").exists()


def test_a_split_folder_trains_without_validating_on_itself(tiny_data):
    from edgeseg.training.data import training_splits

    train, val = training_splits(tiny_data / "train")
    assert len(train) == 8 and val is None
    train, val = training_splits(tiny_data)
    assert len(train) == 8 and len(val) == 4


def test_distill_with_kl_cwd_and_features(tiny_teacher, tiny_data, tmp_path):
    from edgeseg.distillation.api import distill

    meta = distill(str(tiny_teacher), str(tiny_data), str(tmp_path / "s.pt"), student="mobilenetv3-small",
                   epochs=1, batch_size=4, loss="kl+cwd+feat", loss_weights={"cwd": 2.0},
                   feature_pairs=["net.backbone.12:encoder.2"], feature_loss="cwd")
    settings = meta["training"]["distill"]
    assert settings["loss"] == "ce+kl+cwd+feat" and settings["weights"] == {"kl": 1.0, "cwd": 2.0, "feat": 1.0}
    # the connector was training-only: the saved student is a plain registered architecture
    state = load_model(tmp_path / "s.pt").model.state_dict()
    assert not any("connector" in key or "project" in key for key in state)


def test_distillation_terms_are_validated():
    from edgeseg.distillation.objective import parse_loss
    from edgeseg.errors import ConfigError

    assert parse_loss("ce+kl+cwd", {}) == {"kl": 1.0, "cwd": 3.0}
    with pytest.raises(ConfigError, match="is not a"):
        parse_loss("kl+dice", {})
    with pytest.raises(ConfigError, match="unknown term"):
        parse_loss("kl", {"foo": 1.0})


def test_feature_pair_naming_a_missing_module(tiny_teacher, tiny_data, tmp_path):
    from edgeseg.distillation.api import distill
    from edgeseg.errors import ConfigError

    with pytest.raises(ConfigError, match="has no module 'nope'"):
        distill(str(tiny_teacher), str(tiny_data), str(tmp_path / "s.pt"), student="mobilenetv3-small", epochs=1,
                loss="feat", feature_pairs=["nope:encoder.2"])


def _tiny_fit(tiny_data, out, epochs, resume=False, crash_at_step=None, ema=0.0, base_channels=8, optimizer="adamw",
              loss_settings=None):
    split = resolve_split(tiny_data, "train")
    dataset = SegmentationDataset(split, InputSpec(64, 64), AugmentConfig())
    torch.manual_seed(0)
    model = create_model("unet", 8, base_channels=base_channels, encoder_depth=2)
    calls = {"n": 0}

    def loss_fn(logits, _images, labels):
        calls["n"] += 1
        if crash_at_step is not None and calls["n"] == crash_at_step:
            raise KeyboardInterrupt("killed")
        loss = F.cross_entropy(logits, labels, ignore_index=255)
        return loss, {"ce": loss.item()}

    history = fit(model, dataset, None, loss_fn, TrainConfig(epochs=epochs, batch_size=4, grad_clip=1.0,
                                                             ema_decay=ema, optimizer=optimizer),
                  num_classes=8, ignore_index=255, description="t", checkpoint_to=str(out), resume=resume,
                  loss_settings=loss_settings)
    return model, history


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_continues_exactly_after_a_kill(tiny_data, tmp_path, ema):
    straight, _ = _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=3, ema=ema)
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(tiny_data, tmp_path / "b.pt", epochs=3, crash_at_step=6, ema=ema)  # 2 steps per epoch: dies in epoch 3
    assert (tmp_path / "b.pt.state").exists() and (tmp_path / "b.pt.log.csv").read_text().count("\n") == 3
    resumed, history = _tiny_fit(tiny_data, tmp_path / "b.pt", epochs=3, resume=True, ema=ema)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_without_state_is_a_clear_error(tiny_data, tmp_path):
    from edgeseg.errors import ConfigError

    with pytest.raises(ConfigError, match="found no training state"):
        _tiny_fit(tiny_data, tmp_path / "none.pt", epochs=1, resume=True)


def test_resume_with_another_model_is_a_clear_error(tiny_data, tmp_path):
    """--arch-arg base_channels=8 wrote the state; resuming with 16 names the first tensor that differs."""
    from edgeseg.errors import ConfigError

    _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=1)
    with pytest.raises(ConfigError, match=r"built another model or optimizer: its .*weight is \(8, 3, 3, 3\), "
                                          r"this model's is \(16, 3, 3, 3\)\. Resume with the options of the run"):
        _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=2, resume=True, base_channels=16)


def test_resume_with_another_optimizer_is_a_clear_error(tiny_data, tmp_path):
    """AdamW's state loads into SGD without complaint and fails at its first step; the state names its optimizer."""
    from edgeseg.errors import ConfigError

    _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=1)
    with pytest.raises(ConfigError, match="it was trained with AdamW, this run asks for SGD"):
        _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=2, resume=True, optimizer="sgd")


def test_resume_with_other_loss_settings_is_a_clear_error(tiny_data, tmp_path):
    from edgeseg.errors import ConfigError

    _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=1, loss_settings={"class_weights": [0.5, 2.0]})
    with pytest.raises(ConfigError, match=r"a.pt.state was trained with class weights \[0.5, 2\], this run asks "
                                          r"for \[0.5, 3\]; resuming would change the loss half-way"):
        _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=2, resume=True, loss_settings={"class_weights": [0.5, 3.0]})
    with pytest.raises(ConfigError, match="this run asks for none"):
        _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=2, resume=True)
    _, history = _tiny_fit(tiny_data, tmp_path / "a.pt", epochs=2, resume=True,
                           loss_settings={"class_weights": [0.5, 2.0]})
    assert [r["epoch"] for r in history] == [1, 2]


def test_a_state_from_before_loss_settings_were_saved_resumes():
    from edgeseg.training.state import require_same_loss

    require_same_loss({}, Path("old.pt.state"), {"class_weights": [1.0, 2.0]})  # nothing recorded: not checked


def test_optimizer_moments_of_other_shapes_are_named():
    """A loss with learnt adapters of other sizes keeps the parameter count but not the moments' shapes."""
    from edgeseg.training.state import _optimizer_difference

    saved = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4, 3))])
    saved.param_groups[0]["params"][0].grad = torch.ones(4, 3)
    saved.step()
    now = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(5, 3))])
    state = {"optimizer": saved.state_dict(), "optimizer_type": "AdamW"}
    assert _optimizer_difference(state, now) == ("its optimizer's exp_avg for parameter 0 is (4, 3), this run's "
                                                 "parameter is (5, 3) (another --loss?)")
    assert _optimizer_difference(state, saved) is None


def test_precise_batchnorm_replaces_lagging_running_statistics():
    from edgeseg.training.loop import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.01))
    batches = [(torch.randn(4, 3, 8, 8) * 3 + 5, torch.zeros(4, 8, 8)) for _ in range(3)]
    model.eval()
    recalibrate_batchnorm(model, batches, torch.device("cpu"))
    with torch.no_grad():
        features = torch.cat([model[0](images) for images, _ in batches])
    per_batch_means = torch.stack([f.mean((0, 2, 3)) for f in features.split(4)])
    torch.testing.assert_close(model[1].running_mean, per_batch_means.mean(0))
    assert model[1].momentum == 0.01 and not model.training  # settings and mode restored
