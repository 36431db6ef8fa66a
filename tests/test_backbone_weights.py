"""--backbone-weights: ImageNet classification weights (torchvision's cache or a file) onto the encoder.

The "ImageNet" weights are a seeded torchvision classification model's state_dict made
here: saved as a file, and placed where torchvision's cache expects the real one.
"""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from edgeseg.arch import create_model
from edgeseg.arch.backbones import BACKBONES, cached_imagenet_file, load_backbone_weights
from edgeseg.checkpoint import load_model
from edgeseg.cli.main import cli
from edgeseg.errors import ConfigError, InputFileError


def _classifier_state(network: str, seed: int = 1) -> dict:
    from torchvision.models import get_model

    torch.manual_seed(seed)
    net = get_model(network, weights=None)
    for module in net.modules():  # BN statistics unlike a fresh model's, so they are checked too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return net.state_dict()


def _assert_backbone_is(model, arch: str, state: dict) -> int:
    backbone = BACKBONES[arch]
    checked = 0
    for key, value in model.state_dict().items():
        if key.startswith(backbone.prefix) and not key.endswith("num_batches_tracked"):
            rest = key[len(backbone.prefix):]
            source = backbone.source_prefix + (backbone.rename(rest) if backbone.rename else rest)
            assert torch.equal(value, state[source]), key
            checked += 1
    return checked


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """An empty torchvision cache, and any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr("urllib.request.urlopen", no_download)
    return tmp_path / "torch-home"


@pytest.mark.parametrize("arch, network", [("lraspp-mobilenetv3-small", "mobilenet_v3_small"),
                                           ("pspnet-mobilenetv3", "mobilenet_v3_large"),
                                           ("refinenet-lw-mobilenetv2", "mobilenet_v2")])
def test_file_in_torchvision_naming_fills_every_backbone_tensor(arch, network, tmp_path, empty_torch_home):
    state = _classifier_state(network)
    path = tmp_path / f"{network}.pth"
    torch.save(state, path)
    model = create_model(arch, 5)
    loaded = load_backbone_weights(model, arch, str(path))
    assert loaded.matched == loaded.total > 20 and loaded.matched_by == "name"
    assert _assert_backbone_is(model, arch, state) == loaded.total


def test_timm_style_names_match_by_order(tmp_path, empty_torch_home):
    state = _classifier_state("mobilenet_v3_small")
    # timm lists the same layers in the same order under its own names (conv_stem, blocks.*, conv_head, ...)
    timm_like = {f"blocks.{i}.param": v for i, v in enumerate(v for k, v in state.items()
                                                                if not k.endswith("num_batches_tracked"))}
    path = tmp_path / "timm.pth"
    torch.save({"state_dict_ema": timm_like, "epoch": 300}, path)
    model = create_model("lraspp-mobilenetv3-small", 5)
    loaded = load_backbone_weights(model, "lraspp-mobilenetv3-small", str(path))
    assert loaded.matched_by == "order" and loaded.matched == loaded.total
    _assert_backbone_is(model, "lraspp-mobilenetv3-small", state)


def test_fewer_than_90_percent_matched_is_refused(tmp_path, empty_torch_home):
    path = tmp_path / "v2.pth"
    torch.save(_classifier_state("mobilenet_v2"), path)  # another network's weights
    model = create_model("lraspp-mobilenetv3-small", 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputFileError, match=r"Only \d+ of the \d+ tensors .* at least 90% needed"):
        load_backbone_weights(model, "lraspp-mobilenetv3-small", str(path))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded
    with pytest.raises(ConfigError, match="no pretrained backbone"):
        load_backbone_weights(create_model("unet", 5, base_channels=8), "unet", str(path))


def test_imagenet_comes_from_torchvisions_cache(empty_torch_home):
    state = _classifier_state("mobilenet_v3_small", seed=7)
    cached = cached_imagenet_file("mobilenet_v3_small")
    assert str(cached).startswith(str(empty_torch_home))  # follows TORCH_HOME, as torchvision does
    model = create_model("lraspp-mobilenetv3-small", 5)
    assert load_backbone_weights(model, "lraspp-mobilenetv3-small", None) is None  # default, nothing cached: scratch
    with pytest.raises(InputFileError, match=f"put {cached.name} .* in {cached.parent}/.*--backbone-weights PATH"):
        load_backbone_weights(model, "lraspp-mobilenetv3-small", "imagenet")
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    for weights in ("imagenet", None):  # asked for, and the default once it is cached
        model = create_model("lraspp-mobilenetv3-small", 5)
        loaded = load_backbone_weights(model, "lraspp-mobilenetv3-small", weights)
        assert loaded.source.startswith("imagenet") and loaded.mean == pytest.approx((123.675, 116.28, 103.53))
        _assert_backbone_is(model, "lraspp-mobilenetv3-small", state)


def test_train_without_cached_imagenet_exits_2_naming_the_file(tiny_data, tmp_path, empty_torch_home):
    result = CliRunner().invoke(cli, ["train", "--arch", "mobilenetv3-small", "--data", str(tiny_data), "--epochs",
                                      "1", "--backbone-weights", "imagenet", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 2, result.output
    assert "mobilenet_v3_small-" in result.output and "--backbone-weights PATH" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.pt").exists()


def test_student_starts_from_the_backbone_file(tiny_teacher, tiny_data, tmp_path, empty_torch_home):
    state = _classifier_state("mobilenet_v3_small", seed=3)
    path = tmp_path / "imagenet-small.pth"
    torch.save(state, path)
    common = ["--student", "mobilenetv3-small", "--data", str(tiny_data), "--epochs", "1", "--batch-size", "4",
              "--no-tensorboard", "--val-every", "1"]
    for name, extra in (("pretrained", ["--backbone-weights", str(path)]), ("scratch", [])):
        result = CliRunner().invoke(cli, ["distill", str(tiny_teacher), *common, *extra,
                                          "--out", str(tmp_path / f"{name}.pt")])
        assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "pretrained.pt.json").read_text())["training"]["distill"]["backbone_weights"]
    assert recorded["source"] == str(path) and recorded["matched"] == recorded["total"]

    def distance_to_file(checkpoint):
        model = load_model(tmp_path / checkpoint).model
        backbone = BACKBONES["lraspp-mobilenetv3-small"]
        return sum((v.float() - state["features." + k[len(backbone.prefix):]].float()).abs().sum().item()
                   for k, v in model.state_dict().items() if k.startswith(backbone.prefix) and k.endswith("weight"))

    # one epoch of training moves the weights a little; a scratch student is nowhere near the file
    assert distance_to_file("pretrained.pt") < 0.1 * distance_to_file("scratch.pt")


def _cached_segmentation_weights(num_classes: int = 21):
    """A seeded LR-ASPP state_dict where torchvision's cache keeps COCO_WITH_VOC_LABELS_V1."""
    from torchvision.models.segmentation import LRASPP_MobileNet_V3_Large_Weights, lraspp_mobilenet_v3_large

    from edgeseg.arch.backbones import cached_weights_file

    torch.manual_seed(5)
    state = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes).state_dict()
    path = cached_weights_file(LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1)
    return state, path


def test_torchvision_segmentation_weights_by_name_offline(tiny_data, tmp_path, empty_torch_home):
    from edgeseg.arch.backbones import load_segmentation_weights

    arch = "torchvision:lraspp_mobilenet_v3_large"
    state, cached = _cached_segmentation_weights()
    result = CliRunner().invoke(cli, ["train", "--arch", arch, "--weights", "COCO_WITH_VOC_LABELS_V1", "--data",
                                      str(tiny_data), "--epochs", "1", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and cached.name in result.output and str(cached.parent) in result.output
    with pytest.raises(ConfigError, match="no weights NOPE .* COCO_WITH_VOC_LABELS_V1"):
        load_segmentation_weights(create_model(arch, 21), arch, "NOPE", allow_new_classes=True)
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)

    teacher = create_model(arch, 21)  # a teacher: every tensor, the 21 VOC classes
    load_segmentation_weights(teacher, arch, "COCO_WITH_VOC_LABELS_V1", allow_new_classes=False)
    assert all(torch.equal(v, state[k[len("net."):]]) for k, v in teacher.state_dict().items())
    with pytest.raises(InputFileError, match="21 classes must be the data's"):
        load_segmentation_weights(create_model(arch, 5), arch, "COCO_WITH_VOC_LABELS_V1", allow_new_classes=False)

    start = create_model(arch, 5)  # a starting point for 5 classes: all but the class layers
    fresh = {k: v.clone() for k, v in start.state_dict().items()}
    report = load_segmentation_weights(start, arch, "COCO_WITH_VOC_LABELS_V1", allow_new_classes=True)
    assert sorted(report["reinitialised"]) == sorted(k for k in fresh if "_classifier." in k)
    for key, value in start.state_dict().items():
        expected = fresh[key] if key in report["reinitialised"] else state[key[len("net."):]]
        assert torch.equal(value, expected), key

    # as a teacher by name: its classes must be the data's (tiny_data has fewer than VOC's 21)
    result = CliRunner().invoke(cli, ["distill", arch, "--teacher-weights", "COCO_WITH_VOC_LABELS_V1", "--data",
                                      str(tiny_data), "--epochs", "1", "--out", str(tmp_path / "s.pt")])
    assert result.exit_code == 2 and "21 classes must be the data's" in result.output, result.output
