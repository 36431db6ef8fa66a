"""Fake quantisation with torch's own ops: per-channel symmetric INT8 weights, per-tensor INT8 activations.

Why torch's ops and not NVIDIA ModelOpt (``modelopt.torch.quantization``): QAT here never
uses a library's ONNX exporter. The Q/DQ model is written by calibrate's own writer
(quant/qdq.py) with the trained weights and scales, so the layout is calibrate's by
construction; what the library must give is only the rounding, on a CPU as well as a GPU.
``torch.fake_quantize_per_channel_affine`` and
``torch._fake_quantize_learnable_per_tensor_affine`` (LSQ's gradients, Esser et al. 2020)
are in every torch build, train on CPU and round half to even as ONNX QuantizeLinear does;
ModelOpt is a large extra dependency whose quantizers add nothing to that.

The numbers mirror ONNX Runtime's quantizer exactly (quant_utils.compute_scale_zp), so the
fake-quantised model and the written Q/DQ model compute the same values: a weight channel's
scale is 2 max|w| / 254 in float64, stored as float32 (1.0 for an all-zero channel); an
activation is quantised by QuantizeLinear to [-128, 127] with zero point 0.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

ACT_MIN, ACT_MAX = -128, 127  # QuantizeLinear's INT8 saturation; calibrate's symmetric scales are amax / 127
WEIGHT_MIN, WEIGHT_MAX = -127, 127  # ONNX Runtime's symmetric INT8 weights


def weight_scales(weight: torch.Tensor, axis: Optional[int]) -> torch.Tensor:
    """ONNX Runtime's symmetric INT8 scale of ``weight``: per channel along ``axis``, or one for the tensor."""
    detached = weight.detach()
    if axis is None:
        absmax = detached.abs().max().reshape(1)
    else:
        absmax = detached.abs().transpose(0, axis).reshape(detached.shape[axis], -1).max(dim=1).values
    scale = (absmax.double() * 2.0 / (WEIGHT_MAX - WEIGHT_MIN)).float()
    return torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)


def fake_quantize_weight(weight: torch.Tensor, axis: Optional[int]) -> torch.Tensor:
    """``weight`` rounded to INT8 and back; the gradient passes straight through (scales follow the weights)."""
    scale = weight_scales(weight, axis)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(weight, scale, torch.zeros(1, dtype=torch.int32,
                                                                               device=weight.device),
                                                     WEIGHT_MIN, WEIGHT_MAX)
    zero = torch.zeros(scale.numel(), dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, axis % weight.dim(), WEIGHT_MIN, WEIGHT_MAX)


class ActivationQuantizer(nn.Module):
    """One activation tensor's per-tensor INT8 fake quantisation, its scale learned (LSQ) or fixed.

    The scale starts from calibrate's range (amax / 127). Learned, it is calibrate's scale
    times a factor that starts at 1, and LSQ's gradient (scaled by 1 / sqrt(elements x
    127)) moves the factor: with Adam every parameter moves by about the learning rate per
    step, so a scale stored as itself would move by the same absolute amount whether it is
    0.05 or 0.0005 and the small ones (sigmoid gates) would cross zero within a few steps;
    as a factor, every scale moves by the same relative amount. The factor is kept above
    1/1000, so no scale collapses. A fixed scale is a buffer, so the optimizer never sees it.
    """

    MIN_FACTOR = 1e-3

    def __init__(self, scale: float, learn: bool):
        super().__init__()
        self.learn = learn
        self.register_buffer("initial", torch.tensor([float(scale)], dtype=torch.float32))
        if learn:
            self.factor = nn.Parameter(torch.ones(1))
        else:
            self.register_buffer("factor", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1))

    @property
    def scale(self) -> torch.Tensor:
        return self.initial * self.factor.clamp(min=self.MIN_FACTOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learn:
            grad_factor = 1.0 / math.sqrt(x.numel() * ACT_MAX)
            return torch._fake_quantize_learnable_per_tensor_affine(x, self.scale, self.zero_point, ACT_MIN, ACT_MAX,
                                                                   grad_factor)
        return torch.fake_quantize_per_tensor_affine(x, self.initial, self.zero_point.to(torch.int32), ACT_MIN,
                                                     ACT_MAX)

    @property
    def amax(self) -> float:
        """The symmetric range calibrate's writer turns back into this scale (amax / 127)."""
        return float(self.scale.detach()) * 127.0
