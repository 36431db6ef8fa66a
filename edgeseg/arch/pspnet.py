"""PSPNet (Zhao et al., 2017) on MobileNetV3-Large: pyramid pooling over 1, 2, 3 and 6 bins.

The pooling is written with static slices (blocks.adaptive_avg_pool_static), so the
model exports to ONNX and TensorRT at whatever input size it is deployed at, which
``nn.AdaptiveAvgPool2d`` does not when 6 does not divide the feature map.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeseg.arch.blocks import adaptive_avg_pool_static, conv_bn_act, mobilenetv3_stages, upsample_like
from edgeseg.arch.registry import register


class PyramidPooling(nn.Module):
    def __init__(self, in_channels: int, branch_width: int, bins=(1, 2, 3, 6)):
        super().__init__()
        self.bins = bins
        # no BatchNorm after pooling: the 1-bin branch has a single value per channel per image
        self.reduce = nn.ModuleList([nn.Sequential(nn.Conv2d(in_channels, branch_width, 1), nn.ReLU(inplace=True))
                                     for _ in bins])

    def forward(self, x: Tensor) -> Tensor:
        pooled = [upsample_like(reduce(adaptive_avg_pool_static(x, b)), x) for b, reduce in zip(self.bins, self.reduce)]
        return torch.cat([x] + pooled, dim=1)


class PSPNet(nn.Module):
    def __init__(self, num_classes: int, branch_width: int = 128, width: int = 256):
        super().__init__()
        self.backbone, _, high_channels, _ = mobilenetv3_stages(dilated=True)
        self.ppm = PyramidPooling(high_channels, branch_width)
        self.fuse = conv_bn_act(high_channels + 4 * branch_width, width, 3)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fuse(self.ppm(self.backbone(x)["high"]))
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@register("pspnet-mobilenetv3", "PSPNet (pyramid pooling 1/2/3/6) on MobileNetV3-Large", aliases=("pspnet",))
def pspnet_mobilenetv3(num_classes: int) -> nn.Module:
    return PSPNet(num_classes)
