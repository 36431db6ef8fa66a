import os

import pytest
import torch

from edgeseg.arch import create_model
from edgeseg.checkpoint import load_model, save_checkpoint
from edgeseg.errors import ConfigError, InputFileError, UntrustedFileError
from edgeseg.spec import DatasetInfo, InputSpec

SPEC = InputSpec(64, 64)


def _saved(tmp_path, arch="unet", **args):
    model = create_model(arch, 4, **args).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, arch=arch, num_classes=4, input_spec=SPEC, dataset=DatasetInfo(4), arch_args=args)
    return model, path


def test_round_trip_gives_identical_outputs(tmp_path):
    model, path = _saved(tmp_path, base_channels=8, encoder_depth=2)
    loaded = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.input_spec == SPEC and loaded.num_classes == 4 and loaded.arch == "unet"


class _Payload:
    """Unpickling this creates a file: the attack weights_only=True must stop."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload(str(marker))}, path)
    with pytest.raises(UntrustedFileError, match="trust_checkpoint=True"):  # Python's argument, in Python
        load_model(path)
    assert not marker.exists()


def test_full_module_loads_only_when_trusted(tmp_path):
    model = create_model("unet", 4, base_channels=8, encoder_depth=2).eval()
    path = tmp_path / "module.pt"
    torch.save(model, path)
    with pytest.raises(UntrustedFileError):
        load_model(path)
    loaded = load_model(path, trust_checkpoint=True)
    assert loaded.num_classes == 4 and not loaded.rebuildable


def test_torchscript_archive_loads(tmp_path):
    model = create_model("unet", 4, base_channels=8, encoder_depth=2).eval()
    path = tmp_path / "scripted.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 64, 64)).save(str(path))
    loaded = load_model(path)
    assert loaded.arch == "torchscript" and loaded.num_classes == 4


def test_bare_state_dict_needs_arch(tmp_path):
    model = create_model("unet", 4, base_channels=8, encoder_depth=2)
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ConfigError, match=r"facts=ModelFacts\(arch=NAME\)"):
        load_model(path)


def test_truncated_and_empty_files(tmp_path):
    _, path = _saved(tmp_path, base_channels=8, encoder_depth=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="not a readable PyTorch checkpoint"):
        load_model(path)
    path.write_bytes(b"")
    with pytest.raises(InputFileError, match="is empty"):
        load_model(path)
    with pytest.raises(InputFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_checkpoint_written_atomically_leaves_old_file_on_failure(tmp_path, monkeypatch):
    _, path = _saved(tmp_path, base_channels=8, encoder_depth=2)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError):
        _saved(tmp_path, base_channels=8, encoder_depth=2)
    assert path.read_bytes() == before
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []
