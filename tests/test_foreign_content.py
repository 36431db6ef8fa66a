"""Files edgeseg did not make, checked by content: a {"model_state_dict": ...} checkpoint loads to the same outputs,
an ONNX taking other than 3 channels and an already-quantised ONNX are refused in one sentence, writing nothing."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeseg.checkpoint import load_model
from edgeseg.cli.main import cli
from edgeseg.errors import InputFileError
from edgeseg.spec import ModelFacts

NUM_CLASSES = 5
USERS_CODE = """from torch import nn


def build(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, num_classes, 1))
"""


def _users_model(code_path):
    """The user's own architecture file, trained two SGD steps outside edgeseg (BatchNorm statistics no longer 0/1)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("users_net", code_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = module.build(NUM_CLASSES)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, NUM_CLASSES, (2, 32, 32))
    net.train()
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
    return net.eval(), optimizer


def test_a_model_state_dict_checkpoint_loads_with_identical_outputs(tmp_path):
    """The common training-script layout: {"epoch", "model_state_dict", "optimizer_state_dict", "loss"}."""
    code = tmp_path / "users_net.py"
    code.write_text(USERS_CODE)
    net, optimizer = _users_model(code)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 7, "model_state_dict": net.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "loss": 0.25}, path)
    loaded = load_model(path, facts=ModelFacts(arch=f"{code}:build", input_size=(32, 32)))
    assert loaded.num_classes == NUM_CLASSES  # read from the weights
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x), rtol=0, atol=0)
    source = loaded.meta["source"]
    assert source["format"] == "checkpoint with a model_state_dict"
    assert source["matched"] == len(net.state_dict())
    assert source["missing"] == [] and source["mismatched"] == [] and source["unexpected"] == []


def _conv_onnx(path, channels: int) -> None:
    """A one-conv segmentation model taking ``channels``-channel 16x16 images, 2 classes out."""
    weights = np.random.default_rng(channels).standard_normal((2, channels, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])],
        [numpy_helper.from_array(weights, "w")])
    # IR 8 (what opset 17 came with): the default of a new onnx is newer than older ONNX Runtimes read
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


@pytest.mark.parametrize("channels", [1, 4])
def test_an_onnx_taking_other_than_three_channels_is_refused_in_one_sentence(channels, tiny_data, tmp_path):
    from edgeseg.foreign_onnx import describe_onnx

    path = tmp_path / f"c{channels}.onnx"
    _conv_onnx(path, channels)
    sentence = f"takes {channels}-channel images; edgeseg feeds RGB (3 channels)."
    with pytest.raises(InputFileError, match=rf"^{path}.*{sentence.replace('(', r'[(]').replace(')', r'[)]')}$"):
        describe_onnx(path)
    _conv_onnx(tmp_path / "c3.onnx", 3)  # the control: the same graph with 3 channels is described
    assert describe_onnx(tmp_path / "c3.onnx")["model"]["num_classes"] == 2

    result = CliRunner().invoke(cli, ["calibrate", str(path), "--images", str(tiny_data), "--num", "2",
                                      "--method", "minmax"])
    said = " ".join(result.output.split())
    assert result.exit_code != 0 and said == f"Error: {path} {sentence}", result.output  # one line, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c3.onnx", path.name])  # nothing written, no sidecar


def test_calibrate_refuses_an_already_quantised_foreign_onnx(tiny_int8, tiny_data, tmp_path):
    """A Q/DQ model another tool wrote (here: a Q/DQ model without its sidecar): one sentence, nothing written."""
    from edgeseg.quant.api import calibrate

    foreign = tmp_path / "theirs.onnx"
    shutil.copy(tiny_int8, foreign)
    model = onnx.load(str(foreign))
    assert any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    images = str(tiny_data / "train" / "images")
    with pytest.raises(InputFileError, match=r"theirs\.onnx is already int8; calibrate the FP32 ONNX model instead\.$"):
        calibrate(str(foreign), images, method="minmax", num=2, bias_correction=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.onnx"]

    result = CliRunner().invoke(cli, ["calibrate", str(foreign), "--images", images, "--num", "2",
                                      "--method", "minmax", "--no-bias-correction"])
    said = " ".join(result.output.split())
    assert result.exit_code != 0, result.output
    # (before it, the one-line note that a sidecar-less ONNX is normalised with ImageNet's mean/std)
    error = said[said.index("Error:"):]
    assert error == f"Error: {foreign} is already int8; calibrate the FP32 ONNX model instead.", result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.onnx"]  # no .int8.onnx, cache, ranges, twin, sidecar
