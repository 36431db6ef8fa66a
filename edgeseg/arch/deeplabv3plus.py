"""DeepLabV3+ (Chen et al., 2018) on MobileNetV3-Large: ASPP of atrous separable convolutions + a light decoder.

The encoder runs at output stride 16; the decoder fuses the ASPP output with the
stride-4 features, which recovers the object boundaries DeepLabV3 blurs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeseg.arch.blocks import conv_bn_act, mobilenetv3_stages, separable_conv, upsample_like
from edgeseg.arch.registry import register


class ASPP(nn.Module):
    """1x1, three atrous separable 3x3 (rates 6/12/18 at stride 16) and image pooling, projected to ``width``."""

    def __init__(self, in_channels: int, width: int, rates=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_act(in_channels, width, 1)] +
                                      [separable_conv(in_channels, width, dilation=r) for r in rates])
        # no BatchNorm on the pooled 1x1 map: it has one value per channel per image
        self.image_pool = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_act(width * (len(rates) + 2), width, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes: int, width: int = 128, low_width: int = 48):
        super().__init__()
        self.backbone, low_channels, high_channels, _ = mobilenetv3_stages(dilated=True)
        self.aspp = ASPP(high_channels, width)
        self.low_project = conv_bn_act(low_channels, low_width, 1)
        self.decoder = nn.Sequential(separable_conv(width + low_width, width), separable_conv(width, width))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        low = self.low_project(features["low"])
        y = self.decoder(torch.cat([upsample_like(self.aspp(features["high"]), low), low], dim=1))
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@register("deeplabv3plus-mobilenetv3", "DeepLabV3+ (atrous separable ASPP + decoder) on MobileNetV3-Large",
          aliases=("deeplabv3plus",))
def deeplabv3plus_mobilenetv3(num_classes: int, width: int = 128) -> nn.Module:
    return DeepLabV3Plus(num_classes, width=width)
