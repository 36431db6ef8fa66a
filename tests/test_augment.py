"""--augment: the reference recipe zooms 1-2x from the full-resolution frame (sharp), standard from the input size."""
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeseg.data.dataset import resolve_split
from edgeseg.data.resize import resize_image
from edgeseg.data.torch_dataset import AUGMENTATIONS, AugmentConfig, SegmentationDataset, _sharp_size, augmentation
from edgeseg.errors import ConfigError
from edgeseg.spec import InputSpec
from edgeseg.training.loop import TrainConfig

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, flip=False)


def checkerboard(size: int) -> np.ndarray:
    """One-pixel detail: gone once a frame is shrunk to half its size and blown up again."""
    y, x = np.mgrid[:size, :size]
    return np.repeat((((y + x) % 2) * 255).astype(np.uint8)[..., None], 3, axis=-1)


def pixels(dataset: SegmentationDataset, image: torch.Tensor) -> np.ndarray:
    return (image * dataset.std + dataset.mean).permute(1, 2, 0).numpy()


def crops_of(frame: np.ndarray, size: int):
    return [frame[top:top + size, left:left + size] for top in range(frame.shape[0] - size + 1)
            for left in range(frame.shape[1] - size + 1)]


def test_a_sharp_zoom_crops_the_frames_own_pixels(tiny_data, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    frame = checkerboard(64)  # the first training frame, 64x64; the model input is 32x32
    Image.fromarray(frame).save(data / "train" / "images" / "00000.png")
    split = resolve_split(data, "train")
    label = split.label(0)
    sharp = SegmentationDataset(split, InputSpec(32, 32), AugmentConfig(scale=(2.0, 2.0), sharp_zoom=True, **NO_JITTER))
    blurred = SegmentationDataset(split, InputSpec(32, 32), AugmentConfig(scale=(2.0, 2.0), **NO_JITTER))
    np.random.seed(0)
    image, mask = sharp[0]
    got = pixels(sharp, image)
    # zoom 2 of a 32x32 input from a 64x64 frame: a 32x32 window of the frame itself, pixel for pixel
    windows = [i for i, crop in enumerate(crops_of(frame, 32)) if np.abs(got - crop).max() < 0.5]
    assert windows, "the zoomed crop is not a window of the full-resolution frame"
    labels = crops_of(label, 32)
    assert any(np.array_equal(mask.numpy(), labels[i]) for i in windows)  # the mask moved with it
    np.random.seed(0)
    blurry = pixels(blurred, blurred[0][0])
    assert blurry.std() < 0.2 * got.std()  # from the input-size frame the detail is gone: why sharp_zoom exists


def test_a_sharp_frame_shrinks_as_inference_shrinks_it(tiny_data):
    """At zoom 1 the model must see what inference gives it: PIL's antialiased shrink (data/resize.py)."""
    split = resolve_split(tiny_data, "train")
    dataset = SegmentationDataset(split, InputSpec(32, 32), AugmentConfig(scale=(1.0, 1.0), sharp_zoom=True,
                                                                          **NO_JITTER))
    frame = checkerboard(60)  # 60 -> 32: not a whole factor, where a plain bilinear shrink aliases
    dataset.images[0], dataset.labels[0] = frame, np.zeros((60, 60), np.uint8)
    image, _ = dataset[0]
    assert np.abs(pixels(dataset, image) - resize_image(frame, 32, 32)).max() < 2.0


@pytest.mark.parametrize("frame, size, zoom, kept", [
    ((360, 480), (180, 240), 2.0, (360, 480)),  # CamVid at 180x240: the frame as it is
    ((720, 960), (180, 240), 2.0, (360, 480)),  # never above what the largest zoom needs
    ((300, 480), (180, 240), 2.0, (300, 400)),  # the input's aspect ratio, at what the frame's height supports
    ((360, 300), (180, 240), 2.0, (225, 300)),  # ... or at what its width supports
    ((100, 100), (180, 240), 2.0, (180, 240)),  # a small frame: the input size (zoom upsamples, as standard)
])
def test_sharp_frames_are_kept_at_what_the_zoom_needs(frame, size, zoom, kept):
    assert _sharp_size(frame, InputSpec(*size), zoom) == kept


def test_the_reference_recipe_is_torchvisions():
    reference = AUGMENTATIONS["reference"]
    # random scale 0.5-1.0 of a 360x480 frame, crop 180x240, flip: zoom 1-2x the input, no colour jitter
    assert reference.scale == (1.0, 2.0) and reference.sharp_zoom and reference.flip
    assert reference.brightness == reference.contrast == reference.saturation == 0.0
    assert AUGMENTATIONS["standard"] == AugmentConfig()
    with pytest.raises(ConfigError, match="Unknown augmentation 'mixup'; choose one of: standard, reference."):
        augmentation("mixup")
    with pytest.raises(ConfigError, match="Unknown augmentation"):
        TrainConfig(augment="mixup")


def test_train_augment_reference_reaches_the_training_set(tiny_data, tmp_path, monkeypatch):
    from edgeseg.cli.main import cli
    from edgeseg.training import api

    made = []
    original = api.SegmentationDataset

    def recording(split, spec, augment=None):
        made.append(augment)
        return original(split, spec, augment)

    monkeypatch.setattr(api, "SegmentationDataset", recording)
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(cli, ["train", "--arch", "unet", "--data", str(tiny_data), "--out", str(out),
                                      "--epochs", "1", "--batch-size", "4", "--augment", "reference",
                                      "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert made[0] == AUGMENTATIONS["reference"] and made[1] is None  # train augmented, val not
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["training"]["config"]["augment"] == "reference"
    refused = CliRunner().invoke(cli, ["train", "--arch", "unet", "--data", str(tiny_data),
                                       "--out", str(tmp_path / "n.pt"), "--augment", "mixup"])
    assert refused.exit_code != 0 and "'mixup'" in refused.output


def test_the_cli_offers_every_augmentation():
    from edgeseg.cli.main import cli

    import click

    train = cli.get_command(click.Context(cli), "train")
    choices = next(p for p in train.params if p.name == "augment").type.choices
    assert list(choices) == list(AUGMENTATIONS)


class Recorded(Exception):
    """Stops a verb once it has built its training data: what reached it is all the test needs."""


def test_distill_trains_on_the_augmentation_asked_for(tiny_teacher, tiny_data, tmp_path, monkeypatch):
    from edgeseg.distillation import api

    made = []

    def recording(split, spec, augment=None):
        made.append(augment)
        raise Recorded

    monkeypatch.setattr(api, "SegmentationDataset", recording)
    with pytest.raises(Recorded):
        api.distill(str(tiny_teacher), str(tiny_data), str(tmp_path / "s.pt"), student="mobilenetv3-small",
                    training=TrainConfig(epochs=1, augment="reference", tensorboard=False))
    assert made == [AUGMENTATIONS["reference"]]


@pytest.mark.parametrize("verb", ["qat", "prune"])
def test_qat_and_prune_pass_the_augmentation_on(verb, tiny_teacher, tiny_data, tmp_path, monkeypatch):
    from edgeseg.pruning import training

    asked = []

    def recording(data, spec, model_classes, ignore_index=255, augment="standard"):
        asked.append(augment)
        raise Recorded

    monkeypatch.setattr(training, "load_prune_data", recording)
    config = TrainConfig(epochs=1, augment="reference", tensorboard=False)
    with pytest.raises(Recorded):
        if verb == "qat":
            from edgeseg.quantization_aware.api import qat

            qat(str(tiny_teacher), str(tiny_data), str(tmp_path / "q.int8.onnx"), training=config)
        else:
            from edgeseg.pruning.api import prune

            prune(str(tiny_teacher), str(tmp_path / "p.pt"), data=str(tiny_data), finetune=config)
    assert asked == ["reference"]


def test_zooms_by_any_factor_keep_the_mask_on_the_image(tiny_data, tmp_path):
    """A non-whole zoom from a sharp frame: the mask is sampled at the pixel centres the image is."""
    split = resolve_split(tiny_data, "train")
    stripes = (np.arange(64) // 4) % 2  # 4-pixel stripes of two classes
    label = np.tile(stripes, (64, 1)).astype(np.uint8)
    for zoom in (1.2, 1.8):
        dataset = SegmentationDataset(split, InputSpec(32, 32), AugmentConfig(scale=(zoom, zoom), sharp_zoom=True,
                                                                              **NO_JITTER))
        dataset.images[0] = np.repeat((label * 255)[..., None], 3, axis=-1)
        dataset.labels[0] = label
        np.random.seed(0)
        image, mask = dataset[0]
        bright = pixels(dataset, image)[..., 0] > 127.5
        # torch's plain "nearest" agreed on 0.81 (zoom 1.2) and 0.87 (1.8) of the pixels
        assert (bright == (mask.numpy() == 1)).mean() > 0.95, zoom


def test_a_large_sharp_dataset_says_what_it_costs(tiny_data, monkeypatch, capsys):
    from edgeseg.data import torch_dataset

    split = resolve_split(tiny_data, "train")  # 8 frames of 64x64
    monkeypatch.setattr(torch_dataset, "SHARP_MEMORY_WARNING", 4 * 64 * 64 * 8 - 1)
    SegmentationDataset(split, InputSpec(32, 32), AUGMENTATIONS["reference"])
    said = " ".join(capsys.readouterr().err.split())
    assert "--augment reference keeps 8 frames at 64x64 in memory" in said and "--augment standard" in said
    assert "about 0 GiB" in said  # 4 bytes x 64 x 64 x 8 frames, in GiB
    monkeypatch.setattr(torch_dataset, "SHARP_MEMORY_WARNING", 4 * 64 * 64 * 8)
    SegmentationDataset(split, InputSpec(32, 32), AUGMENTATIONS["reference"])
    assert "--augment" not in capsys.readouterr().err


def test_qat_and_prune_data_take_the_augmentation(tiny_data):
    from edgeseg.data.dataset import ClassCount
    from edgeseg.pruning.training import load_prune_data

    data = load_prune_data(str(tiny_data), InputSpec(32, 32), ClassCount(8, "the test"), augment="reference")
    assert data.train_set.augment == AUGMENTATIONS["reference"] and data.plain_train_set.augment is None
    assert load_prune_data(str(tiny_data), InputSpec(32, 32), ClassCount(8, "the test")).train_set.augment == \
        AUGMENTATIONS["standard"]
