"""``distill --resume`` after a kill ends bit-identical to an unbroken run, connectors included.

The feature connectors (learned 1x1 convolutions of ``feat``) live in the distillation
objective, outside the student; the training state must carry them, or a resumed run
restarts them from their initial values and the student drifts from the unbroken run.
"""
import pytest
import torch

from edgeseg.distillation import api
from edgeseg.distillation.objective import DistillationObjective
from edgeseg.errors import ConfigError
from edgeseg.training import loop
from edgeseg.training.state import load_state, state_path

EPOCHS, KILLED_AFTER = 3, 1
# tiny U-Net student (8 channels at encoder.1, 16 at encoder.2) against the tiny U-Net teacher (16, 32): connectors map
PAIRS = ["encoder.1:encoder.1", "encoder.2:encoder.2"]


def _distill(teacher, data, out, monkeypatch, *, loss, feature_loss="mse", pairs=PAIRS, resume=False,
             kill_after=None):
    """Run distill on the tiny data; return (student state, connector state, epochs this call finished).

    ``kill_after=k`` dies as a kill would, right after epoch k's state and log are written.
    """
    made, finished = [], []

    class Recorded(DistillationObjective):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    write_csv = loop._write_csv

    def log(path, history):
        write_csv(path, history)
        finished.append(history[-1]["epoch"])
        if history[-1]["epoch"] == kill_after:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(api, "DistillationObjective", Recorded)
    monkeypatch.setattr(loop, "_write_csv", log)
    try:
        api.distill(str(teacher), str(data), str(out), student="unet", student_args={"base_channels": 4,
                    "encoder_depth": 2}, epochs=EPOCHS, batch_size=4, loss=loss, feature_pairs=pairs,
                    feature_loss=feature_loss, resume=resume, tensorboard=False)
    finally:
        monkeypatch.undo()
    learned = {name: value.clone() for name, value in made[-1].learned.state_dict().items()}
    return load_model_state(out), learned, finished


def load_model_state(out):
    from edgeseg.checkpoint import load_model

    return load_model(out).model.state_dict()


def _assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, first {different[0]}"


@pytest.mark.parametrize("loss, feature_loss, connectors", [("kl+feat", "mse", 2), ("cwd", "mse", 0),
                                                            ("cwd+feat", "cwd", 2)])
def test_killed_distillation_resumes_bit_identical(tiny_teacher, tiny_data, tmp_path, monkeypatch, loss,
                                                   feature_loss, connectors):
    straight, straight_loss, _ = _distill(tiny_teacher, tiny_data, tmp_path / "straight.pt", monkeypatch,
                                          loss=loss, feature_loss=feature_loss)
    assert len(straight_loss) == connectors
    with pytest.raises(KeyboardInterrupt):
        _distill(tiny_teacher, tiny_data, tmp_path / "killed.pt", monkeypatch, loss=loss, feature_loss=feature_loss,
                 kill_after=KILLED_AFTER)
    state = load_state(state_path(tmp_path / "killed.pt"))
    assert state["epoch"] == KILLED_AFTER and len(state["loss"]) == connectors
    resumed, resumed_loss, finished = _distill(tiny_teacher, tiny_data, tmp_path / "killed.pt", monkeypatch,
                                               loss=loss, feature_loss=feature_loss, resume=True)
    assert finished == list(range(KILLED_AFTER + 1, EPOCHS + 1))  # only the epochs the killed run had not finished
    _assert_identical(straight, resumed)
    _assert_identical(straight_loss, resumed_loss)
    if connectors:  # the connectors really trained, so restarting them would have shown
        assert not any(torch.equal(state["loss"][name], straight_loss[name]) for name in straight_loss)


def test_a_state_without_the_connectors_is_refused(tiny_teacher, tiny_data, tmp_path, monkeypatch):
    """A state from before the loss's state was saved cannot resume a run whose loss learns connectors."""
    out = tmp_path / "killed.pt"
    with pytest.raises(KeyboardInterrupt):
        _distill(tiny_teacher, tiny_data, out, monkeypatch, loss="kl+feat", kill_after=KILLED_AFTER)
    with pytest.raises(ConfigError, match=r"trained with feature pairs \[\[encoder\.1, encoder\.1\], \[encoder\.2, "
                                          r"encoder\.2\]\], this run asks for \[\[encoder\.1, encoder\.2\]\]"):
        _distill(tiny_teacher, tiny_data, out, monkeypatch, loss="kl+feat", pairs=["encoder.1:encoder.2"],
                 resume=True)
    # another distance between the same pairs keeps the connectors' shapes: refused by the recorded settings
    with pytest.raises(ConfigError, match=r"trained with feature loss mse, this run asks for cwd; .*\(feature_loss=\)"):
        _distill(tiny_teacher, tiny_data, out, monkeypatch, loss="kl+feat", feature_loss="cwd", resume=True)
    # another --loss is another objective: refused by its terms' weights first
    with pytest.raises(ConfigError, match=r"trained with loss weight kl=1, feat=1, this run asks for kl=1; resuming "
                                          r"would change the loss half-way\. .*\(loss=, loss_weights=, kd_weight=\)"):
        _distill(tiny_teacher, tiny_data, out, monkeypatch, loss="kl", resume=True)
    old = load_state(state_path(out))
    del old["loss_settings"]  # as an older edgeseg wrote it: the connectors themselves still tell
    torch.save(old, state_path(out))
    with pytest.raises(ConfigError, match=r"its loss\.connectors\.0\.project\.weight is \(16, 8, 1, 1\), this run's "
                                          r"loss's is \(32, 8, 1, 1\)\. Resume with the options"):
        _distill(tiny_teacher, tiny_data, out, monkeypatch, loss="kl+feat", pairs=["encoder.1:encoder.2"],
                 resume=True)
    with pytest.raises(ConfigError, match=r"it has loss\.connectors\.0\.project\.weight, which this run's loss lacks"):
        _distill(tiny_teacher, tiny_data, out, monkeypatch, loss="kl", resume=True)
    del old["loss"]
    torch.save(old, state_path(out))
    with pytest.raises(ConfigError, match=r"holds no loss\.connectors\.0\.project\.weight: an older edgeseg wrote it "
                                          r".*start afresh without --resume\.$"):
        _distill(tiny_teacher, tiny_data, out, monkeypatch, loss="kl+feat", resume=True)
