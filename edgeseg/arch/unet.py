"""A compact U-Net: encoder of conv blocks, decoder with skip connections (Ronneberger et al., 2015)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeseg.arch.registry import register


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """``encoder_depth`` down-sampling stages; channels double at each, starting at ``base_channels``."""

    def __init__(self, num_classes: int, base_channels: int = 32, encoder_depth: int = 4):
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(encoder_depth + 1)]
        self.encoder = nn.ModuleList([_conv_block(3, widths[0])] +
                                     [_conv_block(widths[i], widths[i + 1]) for i in range(encoder_depth)])
        self.decoder = nn.ModuleList([_conv_block(widths[i + 1] + widths[i], widths[i])
                                      for i in reversed(range(encoder_depth))])
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2, ceil_mode=True))
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


@register("unet", "A compact U-Net (base 32 channels, depth 4): quick to train, a good small teacher")
def unet(num_classes: int, base_channels: int = 32, encoder_depth: int = 4) -> nn.Module:
    return UNet(num_classes, base_channels=base_channels, encoder_depth=encoder_depth)
