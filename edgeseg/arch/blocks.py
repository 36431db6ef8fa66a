"""Building blocks the hand-written architectures share."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def conv_bn_act(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, padding=dilation * (kernel // 2),
                        dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def separable_conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (atrous when dilation > 1) then pointwise 1x1: DeepLabV3+'s atrous separable convolution."""
    return nn.Sequential(conv_bn_act(in_channels, in_channels, 3, dilation=dilation, groups=in_channels),
                         conv_bn_act(in_channels, out_channels, 1))


def upsample_like(x: Tensor, reference: Tensor) -> Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def adaptive_avg_pool_static(x: Tensor, bins: int) -> Tensor:
    """Adaptive average pooling written as slices and means over the (static) input size.

    ``nn.AdaptiveAvgPool2d`` exports to ONNX only when the output size divides the input
    size; this is the same definition (cell i covers floor(i*n/b) .. ceil((i+1)*n/b)) made
    of Slice and ReduceMean, which ONNX Runtime and TensorRT run at any deployed size.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])

    def spans(n: int) -> List[Tuple[int, int]]:
        return [((i * n) // bins, -((-(i + 1) * n) // bins)) for i in range(bins)]

    rows = [torch.cat([x[:, :, r0:r1, c0:c1].mean(dim=(2, 3), keepdim=True) for c0, c1 in spans(width)], dim=3)
            for r0, r1 in spans(height)]
    return torch.cat(rows, dim=2)


def mobilenetv3_stages(dilated: bool = True) -> Tuple[nn.Module, int, int, int]:
    """MobileNetV3-Large features (output stride 16 when dilated) returning {"low": stride 4, "high": last}.

    Returns (backbone, low channels, high channels, index of the low stage).
    """
    from torchvision.models import mobilenet_v3_large
    from torchvision.models._utils import IntermediateLayerGetter

    features = mobilenet_v3_large(weights=None, dilated=dilated).features
    low = 3  # the last block at stride 4 (24 channels)
    backbone = IntermediateLayerGetter(features, return_layers={str(low): "low", str(len(features) - 1): "high"})
    return backbone, features[low].out_channels, features[-1].out_channels, low
