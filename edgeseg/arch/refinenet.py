"""Light-Weight RefineNet (Nekrasov et al., 2018) on MobileNetV2: chained residual pooling, top-down fusion."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from edgeseg.arch.blocks import upsample_like
from edgeseg.arch.registry import register


class ChainedResidualPooling(nn.Module):
    """x + p1 + p2 + ... where p_i = conv1x1(maxpool5x5(p_{i-1})): context from growing windows, cheaply."""

    def __init__(self, channels: int, stages: int = 4):
        super().__init__()
        self.stages = nn.ModuleList([nn.Conv2d(channels, channels, 1, bias=False) for _ in range(stages)])

    def forward(self, x: Tensor) -> Tensor:
        top = x
        for conv in self.stages:
            top = conv(F.max_pool2d(top, 5, stride=1, padding=2))
            x = x + top
        return x


class LightWeightRefineNet(nn.Module):
    # MobileNetV2 blocks ending each stride: 4 (24 ch), 8 (32), 16 (96), 32 (320)
    STAGE_ENDS = (3, 6, 13, 17)

    def __init__(self, num_classes: int, width: int = 128):
        super().__init__()
        from torchvision.models import mobilenet_v2

        features = mobilenet_v2(weights=None).features
        starts = (0,) + tuple(end + 1 for end in self.STAGE_ENDS[:-1])
        self.stages = nn.ModuleList([features[s:e + 1] for s, e in zip(starts, self.STAGE_ENDS)])
        channels = [features[e].out_channels for e in self.STAGE_ENDS]
        self.reduce = nn.ModuleList([nn.Conv2d(c, width, 1, bias=False) for c in channels])
        self.crp = nn.ModuleList([ChainedResidualPooling(width) for _ in channels])
        self.merge = nn.ModuleList([nn.Conv2d(width, width, 1, bias=False) for _ in channels[:-1]])
        self.classifier = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        size, skips = x.shape[-2:], []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        top = None
        for level in reversed(range(len(skips))):  # from stride 32 down to stride 4
            y = F.relu(self.reduce[level](skips[level]))
            if top is not None:
                y = y + upsample_like(self.merge[level](top), y)
            top = self.crp[level](F.relu(y))
        return F.interpolate(self.classifier(top), size=size, mode="bilinear", align_corners=False)


@register("refinenet-lw-mobilenetv2", "Light-Weight RefineNet (chained residual pooling) on MobileNetV2",
          aliases=("refinenet",))
def refinenet_lw_mobilenetv2(num_classes: int, width: int = 128) -> nn.Module:
    return LightWeightRefineNet(num_classes, width=width)
