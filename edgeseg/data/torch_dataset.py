"""A torch Dataset over a SegmentationSplit, with augmentation that moves image and mask together."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from edgeseg.data.dataset import SegmentationSplit
from edgeseg.data.resize import resize_image, resize_label
from edgeseg.errors import ConfigError
from edgeseg.spec import InputSpec


@dataclass(frozen=True)
class AugmentConfig:
    """Joint image/mask augmentation; mask pixels brought in by padding are ignored.

    ``scale`` is the zoom relative to the model input (above 1: a crop of part of the
    frame). With ``sharp_zoom`` the frames are kept at up to ``scale[1]`` times the input
    size (never above their own resolution), so a zoomed-in crop shows the frame's own
    detail instead of upsampled input-size pixels.
    """

    scale: Tuple[float, float] = (0.75, 1.5)
    flip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    sharp_zoom: bool = False


# --augment: "standard" is edgeseg's recipe so far; "reference" is the recipe users run by hand with torchvision
# (random scale 0.5-1.0 of a 360x480 CamVid frame, crop 180x240, flip, no colour jitter): zoom 1-2x the input
# from the full-resolution frame. Issue 27 measured a hand-trained model 1.8 mIoU above edgeseg's on
# drives it never saw; benchmarks/camvid/augment.py compares the two there.
AUGMENTATIONS = {
    "standard": AugmentConfig(),
    "reference": AugmentConfig(scale=(1.0, 2.0), brightness=0.0, contrast=0.0, saturation=0.0, sharp_zoom=True),
}


def augmentation(name: str) -> AugmentConfig:
    """The AugmentConfig of an --augment name."""
    if name not in AUGMENTATIONS:
        raise ConfigError(f"Unknown augmentation '{name}'; choose one of: {', '.join(AUGMENTATIONS)}.")
    return AUGMENTATIONS[name]


class SegmentationDataset(torch.utils.data.Dataset):
    """Images kept in memory (uint8), augmented per access: resized to the model input size once, or with
    ``augment.sharp_zoom`` to what its largest zoom needs (up to 4x the memory at zoom 2: see SHARP_MEMORY_WARNING)."""

    def __init__(self, split: SegmentationSplit, spec: InputSpec, augment: Optional[AugmentConfig] = None):
        self.spec, self.augment = spec, augment
        self.ignore_index = split.info.ignore_index
        if augment is not None and augment.sharp_zoom:  # sizes differ per frame: lists, not one array
            _warn_if_large(split, spec, augment.scale[1])
            self.images, self.labels = [], []
            for i in range(len(split)):
                image, label = split.image(i), split.label(i)
                height, width = _sharp_size(image.shape[:2], spec, augment.scale[1])
                self.images.append(np.array(resize_image(image, height, width)))  # writable, as np.stack's
                self.labels.append(np.array(resize_label(label, height, width)))
        else:
            self.images = np.stack([resize_image(split.image(i), spec.height, spec.width) for i in range(len(split))])
            self.labels = np.stack([resize_label(split.label(i), spec.height, spec.width) for i in range(len(split))])
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float()
        label = torch.from_numpy(self.labels[index].astype(np.int64))
        if self.spec.color.upper() == "BGR":
            image = image.flip(0)
        if self.augment is not None:
            image, label = self._augment(image, label)
        return (image - self.mean) / self.std, label

    def _augment(self, image: torch.Tensor, label: torch.Tensor):
        cfg, (height, width) = self.augment, (self.spec.height, self.spec.width)
        # random scale, then pad (image with the mean colour, mask with ignore) and crop back to size
        s = float(np.random.uniform(*cfg.scale))
        new_h, new_w = max(8, round(height * s)), max(8, round(width * s))
        # sharp frames are mostly shrunk: antialiased, as PIL shrinks the frames inference sees (data/resize.py)
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=cfg.sharp_zoom)[0]
        # nearest-exact samples pixel centres as bilinear and PIL do; plain "nearest" shifts the mask by up to a
        # pixel against the image (0.81 of a striped frame's pixels agreed at zoom 1.2, 0.98 with nearest-exact).
        # standard keeps "nearest" until its references (tests/test_zoo.py, the trt_rules artifacts) are re-measured
        nearest = "nearest-exact" if cfg.sharp_zoom else "nearest"
        label = F.interpolate(label[None, None].float(), size=(new_h, new_w), mode=nearest)[0, 0].long()
        pad_h, pad_w = max(0, height - new_h), max(0, width - new_w)
        if pad_h or pad_w:
            image = torch.cat([F.pad(image[c:c + 1], (0, pad_w, 0, pad_h), value=float(self.mean[c]))
                               for c in range(3)])
            label = F.pad(label, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = np.random.randint(0, image.shape[1] - height + 1)
        left = np.random.randint(0, image.shape[2] - width + 1)
        image, label = image[:, top:top + height, left:left + width], label[top:top + height, left:left + width]
        if cfg.flip and np.random.rand() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        # colour jitter on the 0-255 image
        gray = image.mean(0, keepdim=True)
        image = gray + (image - gray) * np.random.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        image = (image - image.mean()) * np.random.uniform(1 - cfg.contrast, 1 + cfg.contrast) + image.mean()
        image = image * np.random.uniform(1 - cfg.brightness, 1 + cfg.brightness)
        return image.clamp(0, 255), label.contiguous()


# bytes of frames (3 image + 1 label byte a pixel) above which --augment reference says what it costs
SHARP_MEMORY_WARNING = 8 * 2 ** 30


def _warn_if_large(split: SegmentationSplit, spec: InputSpec, max_zoom: float) -> None:
    """Say so when the sharp frames, estimated from the first, need more than SHARP_MEMORY_WARNING bytes."""
    if not len(split):
        return
    height, width = _sharp_size(split.image(0).shape[:2], spec, max_zoom)
    needed = 4 * height * width * len(split)
    if needed > SHARP_MEMORY_WARNING:
        from edgeseg.console import say

        say(f"--augment reference keeps {len(split)} frames at {height}x{width} in memory, about "
            f"{needed / 2 ** 30:.0f} GiB (per process under torchrun); with less memory than that, use "
            f"--augment standard, which keeps them at {spec.height}x{spec.width}.")


def _sharp_size(frame: Tuple[int, int], spec: InputSpec, max_zoom: float) -> Tuple[int, int]:
    """The size to keep a frame at for sharp zooms: the input size times the largest zoom the frame's own
    resolution supports (at most ``max_zoom``, at least 1), the input's aspect ratio kept."""
    factor = max(1.0, min(max_zoom, frame[0] / spec.height, frame[1] / spec.width))
    return round(spec.height * factor), round(spec.width * factor)


def seed_everything(seed: int) -> None:
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def poly_lr(base_lr: float, step: int, total_steps: int, warmup_steps: int = 0, power: float = 0.9) -> float:
    """Linear warm-up, then the 'poly' decay of DeepLab: lr * (1 - t/T)^0.9."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * math.pow(max(0.0, 1.0 - progress), power)
