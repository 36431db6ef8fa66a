"""BiSeNetV2 (Yu et al., 2021): a wide shallow detail branch, a narrow deep semantic branch, guided aggregation.

The training-only booster heads of the paper are left out: edgeseg trains every model
with its final head, and they would only add parameters to prune and export around. The
gather-and-expand layer's depthwise expansion (a grouped convolution with channel
multiplier 6, which structural pruning cannot split) is written as a 1x1 expansion
followed by a true depthwise convolution.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeseg.arch.blocks import conv_bn_act, upsample_like
from edgeseg.arch.registry import register


class StemBlock(nn.Module):
    def __init__(self, out_channels: int = 16):
        super().__init__()
        self.conv = conv_bn_act(3, out_channels, 3, stride=2)
        self.left = nn.Sequential(conv_bn_act(out_channels, out_channels // 2, 1),
                                  conv_bn_act(out_channels // 2, out_channels, 3, stride=2))
        self.fuse = conv_bn_act(out_channels * 2, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), F.max_pool2d(x, 3, stride=2, padding=1)], dim=1))


class GatherExpand(nn.Module):
    """3x3 conv, expansion (x6) with a depthwise 3x3, 1x1 projection, residual; stride 2 adds a second depthwise."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6):
        super().__init__()
        wide = in_channels * expansion
        layers = [conv_bn_act(in_channels, in_channels, 3), conv_bn_act(in_channels, wide, 1, act=False),
                  conv_bn_act(wide, wide, 3, stride=stride, groups=wide, act=False)]
        if stride == 2:
            layers.append(conv_bn_act(wide, wide, 3, groups=wide, act=False))
        layers.append(conv_bn_act(wide, out_channels, 1, act=False))
        self.body = nn.Sequential(*layers)
        self.shortcut = None
        if stride == 2:
            self.shortcut = nn.Sequential(conv_bn_act(in_channels, in_channels, 3, stride=2, groups=in_channels,
                                                      act=False), conv_bn_act(in_channels, out_channels, 1, act=False))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + (x if self.shortcut is None else self.shortcut(x)))


class ContextEmbedding(nn.Module):
    """Global average context added back onto every position (no BatchNorm on the pooled 1x1 map)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gap = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.out = conv_bn_act(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(x + self.gap(x.mean(dim=(2, 3), keepdim=True)))


class GuidedAggregation(nn.Module):
    """Each branch gates the other: detail x sigmoid(semantic), semantic x sigmoid(detail)."""

    def __init__(self, channels: int):
        super().__init__()
        self.detail_keep = nn.Sequential(conv_bn_act(channels, channels, 3, groups=channels, act=False),
                                         nn.Conv2d(channels, channels, 1))
        self.detail_down = nn.Sequential(conv_bn_act(channels, channels, 3, stride=2, act=False),
                                         nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_up = conv_bn_act(channels, channels, 3, act=False)
        self.semantic_keep = nn.Sequential(conv_bn_act(channels, channels, 3, groups=channels, act=False),
                                           nn.Conv2d(channels, channels, 1))
        self.out = conv_bn_act(channels, channels, 3)

    def forward(self, detail: Tensor, semantic: Tensor) -> Tensor:
        high = self.detail_keep(detail) * torch.sigmoid(upsample_like(self.semantic_up(semantic), detail))
        low = self.detail_down(detail)
        low = low[..., :semantic.shape[2], :semantic.shape[3]] * torch.sigmoid(self.semantic_keep(semantic))
        return self.out(high + upsample_like(low, detail))


class BiSeNetV2(nn.Module):
    def __init__(self, num_classes: int, head_width: int = 128):
        super().__init__()
        self.detail = nn.Sequential(conv_bn_act(3, 64, 3, stride=2), conv_bn_act(64, 64, 3),
                                    conv_bn_act(64, 64, 3, stride=2), conv_bn_act(64, 64, 3), conv_bn_act(64, 64, 3),
                                    conv_bn_act(64, 128, 3, stride=2), conv_bn_act(128, 128, 3),
                                    conv_bn_act(128, 128, 3))
        self.semantic = nn.Sequential(StemBlock(16), GatherExpand(16, 32, 2), GatherExpand(32, 32),
                                      GatherExpand(32, 64, 2), GatherExpand(64, 64),
                                      GatherExpand(64, 128, 2), GatherExpand(128, 128), GatherExpand(128, 128),
                                      GatherExpand(128, 128), ContextEmbedding(128))
        self.aggregate = GuidedAggregation(128)
        self.head = conv_bn_act(128, head_width, 3)
        self.classifier = nn.Conv2d(head_width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.head(self.aggregate(self.detail(x), self.semantic(x)))
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@register("bisenetv2", "BiSeNetV2: detail + semantic branches with guided aggregation (real-time)")
def bisenetv2(num_classes: int) -> nn.Module:
    return BiSeNetV2(num_classes)
