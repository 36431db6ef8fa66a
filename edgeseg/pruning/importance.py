"""How much each channel group matters, and the layers that must never lose channels.

Four criteria, all applied to Torch-Pruning's coupled groups (a channel is removed from
every layer of its group at once, so its score sums over the whole group):

- ``magnitude``: L2 norm of the group's weights (Li et al. 2017);
- ``bn-scale``: |gamma| of the group's BatchNorm (network slimming, Liu et al. 2017);
  meaningful after a sparsity-regularised phase that pushes useless gammas to zero;
- ``taylor``: |weight x gradient|, the first-order Taylor estimate of how much the loss
  rises when the channel is removed (Molchanov et al. 2019); needs data for the gradient;
- ``random``: the baseline every criterion must beat.
"""
from __future__ import annotations

from typing import Iterable, List

import torch
from torch import nn

from edgeseg.errors import ConfigError

IMPORTANCES = ("magnitude", "bn-scale", "taylor", "random")
NEEDS_GRADIENTS = ("taylor",)


def make_importance(name: str):
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "bn-scale":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise ConfigError(f"Unknown importance '{name}'; choose one of: {', '.join(IMPORTANCES)}.")


def class_layers(model: nn.Module, num_classes: int) -> List[nn.Module]:
    """Layers whose output is the class dimension: pruning them would change what the model predicts."""
    found = [m for m in model.modules()
             if (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
             or (isinstance(m, nn.Linear) and m.out_features == num_classes)]
    if not found:
        raise ConfigError(f"No layer outputs {num_classes} channels, so the classifier cannot be protected; "
                          f"check that the model's num_classes is right.")
    return found


def accumulate_gradients(model: nn.Module, batches: Iterable, ignore_index: int, class_weights=None) -> int:
    """Leave in every parameter's ``.grad`` the cross-entropy gradient summed over ``batches``
    (weighted per class by ``class_weights``, a list, as the model was trained).

    The model stays in eval mode: BatchNorm uses its running statistics, so the gradient
    is that of the network that will actually be pruned and deployed. Returns the
    number of images used.
    """
    model.eval()
    model.zero_grad(set_to_none=True)
    weight = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
    images_seen = 0
    for images, labels in batches:
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(images), labels, ignore_index=ignore_index, weight=weight)
            loss.backward()
        images_seen += len(images)
    if not images_seen:
        raise ConfigError("Taylor importance got no images to compute gradients on; check --data.")
    for param in model.parameters():  # a layer the loss does not reach (an unused aux head) scores zero
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    return images_seen


def bn_l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |gamma| over every BatchNorm: network slimming's sparsity term."""
    gammas = [m.weight.abs().sum() for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
    if not gammas:
        raise ConfigError("The model has no BatchNorm layers, so --sparsity-epochs (network slimming) cannot apply; "
                          "use --importance magnitude or taylor.")
    return torch.stack(gammas).sum()
