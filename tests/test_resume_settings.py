"""A killed run resumed with another objective is refused: the augmentation, the ignored label value and
distillation's temperature and weights are saved in the training state beside the class weights."""
import numpy as np
import pytest
import torch

from edgeseg.errors import ConfigError
from edgeseg.training.loop import TrainConfig

TINY_UNET = {"base_channels": 4, "encoder_depth": 2}


def _killed_after_the_first_epoch(monkeypatch):
    """The next run dies once its first epoch is written, leaving its state behind (as a killed run does)."""
    from edgeseg.training import loop

    write_csv = loop._write_csv

    def dies(path, history):
        write_csv(path, history)
        if history[-1]["epoch"] == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop, "_write_csv", dies)


def _training(**options) -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=4, val_every=2, tensorboard=False, **options)


def test_train_resumed_with_another_augmentation_or_ignore_index_is_refused(tiny_data, tmp_path, monkeypatch):
    from edgeseg.training.api import train
    from edgeseg.training.state import load_state, require_same_loss, resume_settings, state_path

    model, data = tmp_path / "model.pt", tiny_data
    _killed_after_the_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train("unet", str(data), str(model), arch_args=TINY_UNET, training=_training(augment="reference"))
    monkeypatch.undo()
    saved = load_state(state_path(model))["loss_settings"]
    assert saved == {"class_weights": None, "ignore_index": 255, "augment": "reference"}
    with pytest.raises(ConfigError, match=r"model.pt.state was trained with augment reference, this run asks for "
                                          r"standard; resuming would change the training images half-way\. Resume "
                                          r"with the run's own options \(TrainConfig\(augment=\.\.\.\)\)"):
        train("unet", str(data), str(model), arch_args=TINY_UNET, training=_training(), resume=True)
    # the ignored label value is recorded too; changed (a dataset.yaml edited between the runs) it is refused
    with pytest.raises(ConfigError, match=r"trained with ignore index 255, this run asks for 0; resuming would "
                                          r"change the loss half-way\. .*\(ignore_index=, or the data's dataset"):
        require_same_loss(load_state(state_path(model)), state_path(model),
                          resume_settings({"class_weights": None}, augment="reference", ignore_index=0))
    assert not model.exists()  # refused: nothing written
    train("unet", str(data), str(model), arch_args=TINY_UNET, training=_training(augment="reference"),
          resume=True)
    assert model.exists()


def test_distill_resumed_with_another_temperature_or_kd_weight_is_refused(tiny_data, tmp_path, monkeypatch):
    from edgeseg.distillation.api import distill
    from edgeseg.training.api import train

    teacher, student = tmp_path / "teacher.pt", tmp_path / "student.pt"
    train("unet", str(tiny_data), str(teacher), arch_args=TINY_UNET, epochs=1, batch_size=4, tensorboard=False)
    options = dict(student="unet", student_args=TINY_UNET, training=_training())
    _killed_after_the_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        # numpy numbers from a user's script: the state must still load with weights_only=True
        distill(str(teacher), str(tiny_data), str(student), temperature=np.float64(2.0), kd_weight=np.float32(0.5),
                **options)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"trained with temperature 2, this run asks for 4; .*\(temperature=\)"):
        distill(str(teacher), str(tiny_data), str(student), kd_weight=0.5, resume=True, **options)
    with pytest.raises(ConfigError, match=r"trained with loss weight kl=0\.5, this run asks for kl=1; .*"
                                          r"\(loss=, loss_weights=, kd_weight=\)"):
        distill(str(teacher), str(tiny_data), str(student), temperature=2.0, resume=True, **options)
    distill(str(teacher), str(tiny_data), str(student), temperature=2.0, kd_weight=0.5, resume=True, **options)
    assert student.exists()


def test_a_state_that_does_not_record_a_setting_resumes(tiny_data, tmp_path, monkeypatch):
    """States written before edgeseg recorded the augmentation and ignore index are not refused for them."""
    from edgeseg.training.api import train
    from edgeseg.training.state import state_path

    model = tmp_path / "model.pt"
    _killed_after_the_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train("unet", str(tiny_data), str(model), arch_args=TINY_UNET, training=_training())
    monkeypatch.undo()
    state = torch.load(state_path(model), weights_only=False)
    state["loss_settings"] = {"class_weights": None}  # as an older edgeseg wrote it
    torch.save(state, state_path(model))
    train("unet", str(tiny_data), str(model), arch_args=TINY_UNET, training=_training(augment="reference"),
          resume=True)
    assert model.exists()


def test_prune_resumed_with_another_augmentation_is_refused_before_pruning(tiny_data, tmp_path, monkeypatch):
    from edgeseg.pruning import api
    from edgeseg.training.api import train

    model, out = tmp_path / "model.pt", tmp_path / "pruned.pt"
    train("unet", str(tiny_data), str(model), arch_args=TINY_UNET, epochs=1, batch_size=4, tensorboard=False)
    killed_run = {"loss_settings": {"class_weights": None, "ignore_index": 255, "augment": "reference"}}
    torch.save(killed_run, tmp_path / "pruned.pt.state")
    pruned = []
    monkeypatch.setattr(api, "layer_structure", lambda net: pruned.append(net) or {})
    with pytest.raises(ConfigError, match=r"pruned.pt.state was trained with augment reference, this run asks for "
                                          r"standard; resuming would change the training images half-way"):
        api.prune(str(model), str(out), ratio=0.25, data=str(tiny_data), finetune=_training(), resume=True)
    assert not pruned  # refused before any pruning work


def test_on_the_command_line_the_sentence_names_the_options():
    from pathlib import Path

    from edgeseg.errors import speak_to_cli
    from edgeseg.training.state import require_same_loss, resume_settings

    state = {"loss_settings": resume_settings({"loss_weight": {"kl": 1.0}}, augment="reference", ignore_index=255)}
    speak_to_cli(True)
    try:
        with pytest.raises(ConfigError, match=r"asks for standard; .*\(--augment\), or delete m\.pt\.state"):
            require_same_loss(state, Path("m.pt.state"),
                              resume_settings({"loss_weight": {"kl": 1.0}}, augment="standard", ignore_index=255))
        with pytest.raises(ConfigError, match=r"asks for kl=0\.5; .*\(--loss, --loss-weight, --kd-weight\)"):
            require_same_loss(state, Path("m.pt.state"),
                              resume_settings({"loss_weight": {"kl": 0.5}}, augment="reference", ignore_index=255))
    finally:
        speak_to_cli(False)
