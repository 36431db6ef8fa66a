"""ENet (Paszke et al., 2016): the real-time encoder-decoder of bottlenecks, dilated and asymmetric convolutions.

Two deliberate deviations make it deployable and prunable: downsampling shortcuts use
max-pooling then a 1x1 convolution (not zero-padded channels, which structural pruning
cannot follow), and the decoder upsamples bilinearly (TensorRT has no MaxUnpool).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeseg.arch.registry import register


def _bn_prelu(channels: int) -> list:
    return [nn.BatchNorm2d(channels), nn.PReLU(channels)]


class InitialBlock(nn.Module):
    """3x3 stride-2 convolution (13 channels) concatenated with a max-pooled copy of the RGB input: 16 channels."""

    def __init__(self, out_channels: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels - 3, 3, stride=2, padding=1, bias=False)
        self.post = nn.Sequential(*_bn_prelu(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.post(torch.cat([self.conv(x), F.max_pool2d(x, 2, ceil_mode=True)], dim=1))


class Bottleneck(nn.Module):
    """1x1 reduce -> main conv (regular, dilated, asymmetric 5x1+1x5, or stride 2) -> 1x1 expand, + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, kind: str = "regular", dilation: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        inner = out_channels // 4
        stride = 2 if kind == "down" else 1
        if kind == "asymmetric":
            main = [nn.Conv2d(inner, inner, (5, 1), padding=(2, 0), bias=False),
                    nn.Conv2d(inner, inner, (1, 5), padding=(0, 2), bias=False)]
        else:
            main = [nn.Conv2d(inner, inner, 3, padding=dilation, dilation=dilation, bias=False)]
        self.branch = nn.Sequential(nn.Conv2d(in_channels, inner, 2 if stride == 2 else 1, stride=stride, bias=False),
                                    *_bn_prelu(inner), *main, *_bn_prelu(inner),
                                    nn.Conv2d(inner, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                                    nn.Dropout2d(dropout))
        self.shortcut = None
        if stride == 2 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.stride = stride
        self.act = nn.PReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        if self.stride == 2:
            skip = F.max_pool2d(skip, 2, ceil_mode=True)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        y = self.branch(x)
        return self.act(y + skip[..., :y.shape[2], :y.shape[3]])


class UpBottleneck(nn.Module):
    """The decoder's upsampling bottleneck: bilinear x2 of both paths, then the usual residual sum."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = Bottleneck(in_channels, out_channels, dropout=0.1)  # its 1x1 shortcut changes the width

    def forward(self, x: Tensor, size) -> Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.body(x)


class ENet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.initial = InitialBlock(16)
        stage2_3 = [("regular", 1), ("regular", 2), ("asymmetric", 1), ("regular", 4),
                    ("regular", 1), ("regular", 8), ("asymmetric", 1), ("regular", 16)]
        self.stage1 = nn.Sequential(Bottleneck(16, 64, "down", dropout=0.01),
                                    *[Bottleneck(64, 64, dropout=0.01) for _ in range(4)])
        self.stage2 = nn.Sequential(Bottleneck(64, 128, "down"),
                                    *[Bottleneck(128, 128, kind, d) for kind, d in stage2_3])
        self.stage3 = nn.Sequential(*[Bottleneck(128, 128, kind, d) for kind, d in stage2_3])
        self.up4 = UpBottleneck(128, 64)
        self.stage4 = nn.Sequential(Bottleneck(64, 64), Bottleneck(64, 64))
        self.up5 = UpBottleneck(64, 16)
        self.stage5 = Bottleneck(16, 16)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        s1 = self.initial(x)
        s2 = self.stage1(s1)
        y = self.stage3(self.stage2(s2))
        y = self.stage4(self.up4(y, s2.shape[-2:]))
        y = self.stage5(self.up5(y, s1.shape[-2:]))
        return F.interpolate(self.classifier(y), size=size, mode="bilinear", align_corners=False)


@register("enet", "ENet: the classic real-time segmentation network (0.36 M parameters)")
def enet(num_classes: int) -> nn.Module:
    return ENet(num_classes)
