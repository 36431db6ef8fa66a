"""torchvision's segmentation architectures, built from scratch (no weights are downloaded)."""
from __future__ import annotations

from torch import Tensor, nn

from edgeseg.arch.registry import register


class LogitsOnly(nn.Module):
    """torchvision segmentation models return {"out": logits, "aux": ...}; keep only the logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]


@register("deeplabv3-resnet50", "DeepLabV3 (ASPP) on a ResNet-50 backbone: the accurate, heavy teacher")
def deeplabv3_resnet50(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_resnet50 as build

    return LogitsOnly(build(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))


@register("fcn-resnet50", "FCN (fully convolutional, Long et al. 2015) on a dilated ResNet-50")
def fcn_resnet50(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import fcn_resnet50 as build

    return LogitsOnly(build(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))


@register("deeplabv3-mobilenetv3-large", "DeepLabV3 (ASPP) on MobileNetV3-Large: a mid-size teacher, 5x the "
          "LR-ASPP student's MACs")
def deeplabv3_mobilenetv3_large(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large as build

    return LogitsOnly(build(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))


@register("lraspp-mobilenetv3-large", "LR-ASPP head on MobileNetV3-Large: the default edge student",
          aliases=("mobilenetv3", "mobilenetv3-large"))
def lraspp_mobilenetv3_large(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large as build

    return LogitsOnly(build(weights=None, weights_backbone=None, num_classes=num_classes))


@register("lraspp-mobilenetv3-small", "LR-ASPP head on MobileNetV3-Small: the smallest student",
          aliases=("mobilenetv3-small",))
def lraspp_mobilenetv3_small(num_classes: int) -> nn.Module:
    # torchvision builds LR-ASPP only for the large backbone; assemble the small one the same way
    from torchvision.models import mobilenet_v3_small
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.lraspp import LRASPP

    features = mobilenet_v3_small(weights=None, dilated=True).features
    stages = [0] + [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)] + [len(features) - 1]
    low, high = stages[-4], stages[-1]
    backbone = IntermediateLayerGetter(features, return_layers={str(low): "low", str(high): "high"})
    return LogitsOnly(LRASPP(backbone, features[low].out_channels, features[high].out_channels, num_classes))


def torchvision_segmentation_names() -> list:
    from torchvision import models

    return sorted(models.list_models(module=models.segmentation))


def classes_in_state_dict(state_dict: dict) -> int:
    """The class count a segmentation state_dict predicts: the out-channels of its last 4-D weight (not aux)."""
    weights = [(k, v) for k, v in state_dict.items()
               if k.endswith("weight") and getattr(v, "ndim", 0) == 4 and "aux" not in k]
    # a layer whose own name says classifier wins over file order: safetensors stores names sorted, not in model
    # order (LR-ASPP's classifier.scale.1 then sorts last); MMSeg calls it conv_seg
    named = [v for k, v in weights if "classifier" in k.split(".")[-2] or k.split(".")[-2] in ("conv_seg", "cls_seg")]
    if named:
        return int(named[-1].shape[0])
    return int(weights[-1][1].shape[0]) if weights else -1

