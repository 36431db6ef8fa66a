"""`edgeseg info` on what users bring: checkpoints made elsewhere, TensorRT calibration caches, anything else.
References: the PyTorch model's own state_dict and counters, caches written by quant/trt_cache.py, exact sentences."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from edgeseg.cli.main import cli


def _info(*args):
    result = CliRunner().invoke(cli, ["info", *map(str, args)])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def lraspp():
    from edgeseg.arch import create_model

    torch.manual_seed(0)
    return create_model("lraspp-mobilenetv3-small", 3).eval()


def test_a_bare_state_dict_says_what_it_holds_and_that_arch_loads_it(lraspp, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(lraspp.state_dict(), path)
    code, said = _info(path)
    assert code == 0, said
    state = lraspp.state_dict()
    values = sum(t.numel() for t in state.values())
    assert f"weights.pth (PyTorch checkpoint, no sidecar: bare state_dict)" in said
    assert f"tensors {len(state)}, {values / 1e6:.2f}M values (weights and buffers)" in said
    assert "classes 3 (the out-channels of its last convolution)" in said
    assert "edgeseg needs --arch NAME to load it" in said
    summary = json.loads(CliRunner().invoke(cli, ["info", str(path), "--json"]).output)
    assert (summary["format"], summary["tensors"], summary["values"], summary["num_classes"], summary["needs"]) == \
        ("bare state_dict", len(state), values, 3, "--arch")


def test_with_arch_a_checkpoint_made_elsewhere_is_loaded_and_measured(lraspp, tmp_path):
    from edgeseg.arch.profile import count_macs, count_params

    path = tmp_path / "model_29.pth"  # torchvision's reference scripts save this shape
    torch.save({"model": lraspp.state_dict(), "epoch": 29, "optimizer": {}}, path)
    code, said = _info(path, "--arch", "mobilenetv3-small", "--input-size", "64x96")
    assert code == 0, said
    params, macs = count_params(lraspp), count_macs(lraspp, 64, 96)
    assert "(PyTorch checkpoint, no sidecar: torchvision reference checkpoint)" in said
    assert f"architecture lraspp-mobilenetv3-small params {params / 1e6:.2f}M MACs {macs / 1e9:.3f}G at 64x96" in said
    assert f"loaded {len(lraspp.state_dict())} tensors matched, 0 missing, 0 unexpected" in said
    assert "classes 3" in said and "next edgeseg export model_29.pth" in said
    result = CliRunner().invoke(cli, ["info", str(path), "--arch", "mobilenetv3-small", "--input-size", "64x96",
                                      "--json"])
    summary = json.loads(result.stdout)  # what loading said went to stderr: stdout is the JSON alone
    assert (summary["params"], summary["macs"], summary["counted"], summary["num_classes"]) == \
        (params, macs, "pytorch model", 3)
    # no input size: the parameters, and MACs left to --input-size rather than guessed
    code, said = _info(path, "--arch", "mobilenetv3-small")
    assert code == 0 and f"params {params / 1e6:.2f}M MACs -" in said and "MACs need --input-size" in said
    # the wrong architecture: load_model's one sentence, exit 2
    code, said = _info(path, "--arch", "mobilenetv3-large")
    assert code == 2 and "check --arch" in said


def test_an_edgeseg_checkpoint_whose_sidecar_was_lost_describes_itself(lraspp, tmp_path):
    from edgeseg.arch.profile import count_params
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.spec import InputSpec

    path = tmp_path / "student.pt"
    save_checkpoint(path, lraspp, arch="lraspp-mobilenetv3-small", num_classes=3,
                    input_spec=InputSpec(height=64, width=96), dataset=None)
    code, said = _info(path)
    assert code == 0 and "no sidecar: edgeseg checkpoint" in said, said
    assert f"params {count_params(lraspp) / 1e6:.2f}M" in said and "input 64x96" in said


@pytest.mark.parametrize("version, method, header, calibrator", [
    ("8.5.2", "entropy", "TRT-8502-EntropyCalibration2", "EntropyCalibration2 (read by IInt8EntropyCalibrator2)"),
    ("10.3.0", "minmax", "TRT-100300-MinMaxCalibration", "MinMaxCalibration (read by IInt8MinMaxCalibrator)"),
    ("10.13.3", "entropy", "TRT-101303-EntropyCalibration2", "EntropyCalibration2 (read by IInt8EntropyCalibrator2)"),
    ("8.6.1", "entropy", "TRT-8601-EntropyCalibration2", "EntropyCalibration2 (read by IInt8EntropyCalibrator2)"),
])
def test_a_calibration_cache_shows_its_header_calibrator_version_and_tensors(version, method, header, calibrator,
                                                                             tmp_path):
    from edgeseg.quant.trt_cache import format_cache

    path = tmp_path / "student.calib.cache"
    path.write_text(format_cache({"input": 2.64, "/conv/Conv_output_0": 5.0, "logits": 11.5}, method, version))
    code, said = _info(path)
    assert code == 0, said
    assert "student.calib.cache (TensorRT calibration cache)" in said
    assert f"header {header}" in said and f"calibrator {calibrator}" in said
    assert f"TensorRT {version} (TensorRT ignores a cache headed for another version" in said
    assert "tensors 3 scales" in said and "other lines" not in said
    summary = json.loads(CliRunner().invoke(cli, ["info", str(path), "--json"]).output)
    assert (summary["header"], summary["tensorrt_version"], summary["tensors"]) == (header, version, 3)


def test_other_files_get_one_sentence_naming_what_info_reads(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("TRT is great\n")
    code, said = _info(path)
    assert code == 2 and said == (
        f"Error: {path} is none of the files edgeseg info reads: an artifact edgeseg made (with its sidecar, the "
        f".json beside it), any ONNX model, a PyTorch checkpoint (.pt/.pth/.ckpt/.pt2; a bare state_dict is loaded "
        f"with --arch) or a TensorRT calibration cache.")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00engine")
    code, said = _info(engine)
    assert code == 2 and "for an engine built elsewhere, bench it with --input-size and --trust-engine" in said


def test_a_checkpoint_without_torch_is_one_sentence(lraspp, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(lraspp.state_dict(), path)
    code = ("import sys\nfor name in ('torch', 'torchvision'):\n    sys.modules[name] = None\n"
            "from edgeseg.cli.main import main\nmain(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", code, "info", str(path)], capture_output=True, text=True)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2 and "Traceback" not in said, said
    assert said.endswith("is a PyTorch checkpoint, which info reads with torch, and torch is not installed here: "
                         "pip install torch, or run info on its ONNX export."), said
