"""Distillation losses for segmentation."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def pixel_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Pixel-wise KL(teacher || student) of temperature-softened class distributions, times T².

    Hinton et al. (2015) applied per pixel, as in Liu et al., "Structured Knowledge
    Distillation for Semantic Segmentation" (CVPR 2019). The T² factor keeps gradient
    magnitudes comparable across temperatures. Summed over classes, averaged over pixels.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return kl.mean() * t * t


def match_size(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Resize teacher logits to the student's spatial size (bilinear) when they differ."""
    if teacher_logits.shape[-2:] != student_logits.shape[-2:]:
        teacher_logits = F.interpolate(teacher_logits, size=student_logits.shape[-2:], mode="bilinear",
                                       align_corners=False)
    return teacher_logits


def channel_wise(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021).

    Each channel's activations become a distribution over spatial positions (softmax of
    value / T over H*W); the loss is KL(teacher || student) per channel, averaged over
    channels and images, times T². It teaches *where* each class (or feature) fires,
    which pixel-wise KL does not.
    """
    n, c, h, w = student.shape
    t = temperature
    log_p_student = F.log_softmax(student.reshape(n, c, h * w) / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher.reshape(n, c, h * w) / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl.mean() * t * t


class FeatureConnector(torch.nn.Module):
    """A learned 1x1 convolution that maps student features to the teacher's channel count.

    Only used in training; the deployed student never contains it.
    """

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.project = torch.nn.Conv2d(student_channels, teacher_channels, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(features)


def feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, kind: str = "mse",
                 temperature: float = 4.0) -> torch.Tensor:
    """MSE or CWD between (connected) student features and teacher features, at the teacher's size."""
    if student_features.shape[-2:] != teacher_features.shape[-2:]:
        student_features = F.interpolate(student_features, size=teacher_features.shape[-2:], mode="bilinear",
                                         align_corners=False)
    if kind == "mse":
        return F.mse_loss(student_features, teacher_features)
    if kind == "cwd":
        return channel_wise(student_features, teacher_features, temperature)
    raise ValueError(f"unknown feature loss {kind!r}")
