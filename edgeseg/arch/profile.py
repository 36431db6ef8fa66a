"""Parameter and multiply-accumulate counts of a PyTorch model, measured by one forward pass."""
from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, height: int, width: int) -> int:
    """MACs of one image at (height, width): convolutions and linear layers, which dominate.

    Counted from the real output shapes seen in a forward pass, so strided, dilated,
    grouped and pruned layers are all counted exactly.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        total += output.numel() * kernel

    def deconv_hook(module: nn.ConvTranspose2d, inputs, _output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.out_channels // module.groups)
        total += inputs[0].numel() * kernel

    def linear_hook(module: nn.Linear, _inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.ConvTranspose2d):
            hooks.append(module.register_forward_hook(deconv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, 3, height, width, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return int(total)
