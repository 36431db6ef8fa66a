"""Every architecture family through the whole pipeline, and models users bring themselves.

One chain per registered architecture at 64x64: a training epoch (two steps), distilled
as student and as teacher, pruned by 30%, exported with >= 99.9% argmax agreement,
calibrated to INT8, benched through ONNX Runtime.
"""
import json

import pytest

from tests.onnx_checks import quantized_conv_share
import torch

from edgeseg.arch import create_model, list_models
from edgeseg.arch.profile import count_params
from edgeseg.checkpoint import load_model


@pytest.mark.parametrize("name", [e.name for e in list_models()])
def test_architecture_survives_every_stage(name, tiny_data, tiny_teacher, tmp_path):
    from edgeseg.benchmark.api import bench
    from edgeseg.distillation.api import distill
    from edgeseg.exporting.api import export
    from edgeseg.pruning.api import prune
    from edgeseg.quant.api import calibrate
    from edgeseg.training.api import train

    model = tmp_path / "model.pt"
    train(name, str(tiny_data), str(model), epochs=1, batch_size=4, tensorboard=False)
    distill(str(tiny_teacher), str(tiny_data), str(tmp_path / "as-student.pt"), student=name, epochs=1, batch_size=4,
            tensorboard=False)
    distill(str(model), str(tiny_data), str(tmp_path / "as-teacher.pt"), student="mobilenetv3-small", epochs=1,
            batch_size=4, tensorboard=False)
    pruned = prune(str(model), str(tmp_path / "pruned.pt"), ratio=0.3)
    assert pruned["model"]["params"] < count_params(load_model(model).model)
    onnx_meta = export(str(tmp_path / "pruned.pt"), str(tmp_path / "pruned.onnx"), data=str(tiny_data))
    assert onnx_meta["parity"]["argmax_agreement"] >= 99.9
    calibrate(str(tmp_path / "pruned.onnx"), str(tiny_data / "train" / "images"), num=8)
    checkpoint, fp32, int8 = bench([str(tmp_path / "pruned.pt"), str(tmp_path / "pruned.onnx"),
                                    str(tmp_path / "pruned.int8.onnx")], data=str(tiny_data), iters=2, warmup=1,
                                   show=False)
    assert [r["backend"] for r in (checkpoint, fp32, int8)] == ["pytorch", "onnxruntime", "onnxruntime"]
    # each stage is seeded: the pruned model reaches what it reached when measured (1.5 for another CPU) ...
    assert fp32["miou"] == pytest.approx(MEASURED_FP32_MIOU[name], abs=SPREAD.get(name, 1.5))
    # ... its ONNX export computes the same (measured: equal to the last digit for all twelve) ...
    assert fp32["miou"] == pytest.approx(checkpoint["miou"], abs=0.05)
    # ... and INT8 stays within 1.0 of FP32 (measured: at most 0.65 away, deeplabv3-resnet50; most within 0.1)
    assert abs(int8["miou"] - fp32["miou"]) <= 1.0
    # ... and it really is INT8: the convolutions outside the kept-float classifier read dequantised weights
    assert quantized_conv_share(tmp_path / "pruned.int8.onnx") >= 0.5
    # ... and every ONNX of the chain parses on each TensorRT it may be handed to (onnx-tensorrt's rules)
    from edgeseg.engine.trt_rules import ALL_TARGETS, check_for_tensorrt

    refused = {(artifact, version): check_for_tensorrt(str(tmp_path / artifact), version)[:2]
               for artifact in ("pruned.onnx", "pruned.int8.onnx", "pruned.calib.onnx") for version in ALL_TARGETS}
    refused = {key: problems for key, problems in refused.items() if problems}
    if name == "segformer-b0":  # opset 17's LayerNormalization is newer than TensorRT 8.5's parser
        assert {version for _, version in refused} == {"8.5.2"}
        assert all("LayerNormalization" in " ".join(problems) for problems in refused.values())
    else:
        assert not refused


# val mIoU of the pruned FP32 ONNX above on the 4 val images of tiny_data (one training epoch: near chance, it
# checks the path, not the accuracy), measured on this project's 2-core CI machine
MEASURED_FP32_MIOU = {
    # deeplabv3-resnet50: 14.66 on 2026-11-30's install, 11.78 on a fresh one of 2026-12-03 (torch 2.14.1, the
    # same edgeseg commit 853babc): a dependency resolved anew trains or prunes this one family differently
    "bisenetv2": 3.11, "deeplabv3-mobilenetv3-large": 14.74, "deeplabv3-resnet50": 11.78,
    "deeplabv3plus-mobilenetv3": 4.73, "enet": 3.56, "fcn-resnet50": 13.17, "lraspp-mobilenetv3-large": 3.72,
    "lraspp-mobilenetv3-small": 5.55, "pspnet-mobilenetv3": 6.42, "refinenet-lw-mobilenetv2": 4.24,
    "segformer-b0": 23.26, "unet": 9.56}
# deeplabv3-resnet50 alone moves more than 1.5 between machines and installs: 14.66, 11.78 and 16.97 (AMD
# EPYC, AVX2, 2026-12-03) from the same seeds; the other eleven stayed within 1.5 on both CPUs
SPREAD = {"deeplabv3-resnet50": 5.5}


USER_ARCH = '''
import torch
from torch import nn


class TwoHeads(nn.Module):
    """Returns a dict with an auxiliary output, like many research models."""

    def __init__(self, num_classes, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.out = nn.Conv2d(width, num_classes, 1)
        self.aux = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        y = self.body(x)
        return {"out": self.out(y), "aux": self.aux(y)}


def build(num_classes, width=8):
    return TwoHeads(num_classes, width)
'''


def test_your_own_architecture_file(tiny_data, tmp_path):
    from edgeseg.errors import UntrustedFileError
    from edgeseg.pruning.api import prune
    from edgeseg.training.api import train

    source = tmp_path / "my_arch.py"
    source.write_text(USER_ARCH)
    out = tmp_path / "mine.pt"
    train(f"{source}:build", str(tiny_data), str(out), epochs=1, batch_size=4, arch_args={"width": 12},
          tensorboard=False)
    with pytest.raises(UntrustedFileError, match="trust_checkpoint=True"):  # Python's words in Python
        load_model(out)  # rebuilding runs my_arch.py again: only when the user says so
    loaded = load_model(out, trust_checkpoint=True)
    assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, 8, 64, 64)  # the dict became logits
    prune(str(out), str(tmp_path / "mine-pruned.pt"), ratio=0.5, trust_checkpoint=True)
    assert load_model(tmp_path / "mine-pruned.pt", trust_checkpoint=True).model.net.body[0].out_channels == 6


def test_torchvision_model_by_name_trains(tiny_data, tmp_path):
    from edgeseg.training.api import train

    out = tmp_path / "tv.pt"
    train("torchvision:lraspp_mobilenet_v3_large", str(tiny_data), str(out), epochs=1, batch_size=4,
          tensorboard=False)
    assert json.loads(out.with_name("tv.pt.json").read_text())["model"]["arch"] == "torchvision:lraspp_mobilenet_v3_large"
    assert load_model(out).model(torch.zeros(1, 3, 64, 64)).shape == (1, 8, 64, 64)


def test_unknown_external_architectures_are_clear_errors(tmp_path):
    from edgeseg.errors import ConfigError, InputFileError

    with pytest.raises(ConfigError, match="not a torchvision segmentation model"):
        create_model("torchvision:resnet18", 4)
    with pytest.raises(InputFileError, match="does not exist"):
        create_model(f"{tmp_path / 'nope.py'}:build", 4)


def test_segmentation_models_pytorch_when_installed():
    pytest.importorskip("segmentation_models_pytorch", reason="the optional smp extra is not installed")
    model = create_model("smp:Unet:resnet18", 4).eval()
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)
