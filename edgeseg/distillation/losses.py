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
