"""The distillation objective: ground-truth cross-entropy plus any mix of KL, CWD and feature terms.

``--loss kl+cwd+feat`` picks the terms; each has a weight. Feature terms capture
intermediate outputs of named student and teacher modules with forward hooks and pass
the student's through a learned 1x1 connector when the channel counts differ. Whatever
the objective learns sits in one module, ``learned``, which the training loop optimises
with the student and saves in (and restores from) the training state beside it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

from edgeseg.distillation.losses import FeatureConnector, channel_wise, feature_loss, match_size, pixel_kl
from edgeseg.errors import ConfigError

TERMS = ("kl", "cwd", "feat")
DEFAULT_WEIGHTS = {"kl": 1.0, "cwd": 3.0, "feat": 1.0}


def parse_loss(spec: str, weights: Dict[str, float]) -> Dict[str, float]:
    """'kl+cwd' -> {'kl': 1.0, 'cwd': 3.0} (weights from ``weights`` or the defaults)."""
    terms = [t.strip().lower() for t in spec.split("+") if t.strip()]
    terms = [t for t in terms if t != "ce"]  # cross-entropy on the labels is always on
    unknown = [t for t in terms if t not in TERMS]
    if unknown or not terms:
        raise ConfigError(f"--loss '{spec}' is not a '+'-joined list of {', '.join(TERMS)} (for example kl+cwd).")
    extra = set(weights) - set(TERMS) - {"ce"}
    if extra:
        raise ConfigError(f"--loss-weight names unknown term(s) {', '.join(sorted(extra))}; use {', '.join(TERMS)}.")
    return {t: float(weights.get(t, DEFAULT_WEIGHTS[t])) for t in terms}


def _module(model: torch.nn.Module, name: str, role: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        sample = ", ".join(list(modules)[1:6])
        raise ConfigError(f"The {role} has no module '{name}'; name one of its modules (for example {sample}, ...).")
    return modules[name]


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.zeros(())).device


class DistillationObjective:
    """Callable(student_logits, images, labels) -> (loss, parts) for the training loop."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, terms: Dict[str, float], *,
                 ignore_index: int, temperature: float, feature_pairs: Sequence[Tuple[str, str]] = (),
                 feature_kind: str = "mse", input_size: Tuple[int, int] = (64, 64), ce_weight: float = 1.0,
                 class_weights: Optional[Sequence[float]] = None):
        if "feat" in terms and not feature_pairs:
            raise ConfigError("--loss with 'feat' needs at least one --feature-pair STUDENT_MODULE:TEACHER_MODULE.")
        self.teacher, self.terms, self.ignore_index = teacher, terms, ignore_index
        self.temperature, self.feature_kind, self.ce_weight = temperature, feature_kind, ce_weight
        # the labels' cross-entropy weighted per class, as the teacher was trained (train --class-weights)
        self.class_weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        self.captured: Dict[str, torch.Tensor] = {}
        self.pairs: List[Tuple[str, str]] = list(feature_pairs) if "feat" in terms else []
        for student_name, teacher_name in self.pairs:
            _module(student, student_name, "student").register_forward_hook(self._keep(f"s:{student_name}"))
            _module(teacher, teacher_name, "teacher").register_forward_hook(self._keep(f"t:{teacher_name}"))
        self.connectors = torch.nn.ModuleDict()
        if self.pairs:
            with torch.no_grad():  # one dry run tells the channel counts the connectors must map
                was_training = student.training
                student.eval()
                dummy = torch.zeros(1, 3, *input_size)
                student(dummy.to(_device_of(student)))
                teacher(dummy.to(_device_of(teacher)))
                student.train(was_training)
            for index, (student_name, teacher_name) in enumerate(self.pairs):
                s_channels = self.captured[f"s:{student_name}"].shape[1]
                t_channels = self.captured[f"t:{teacher_name}"].shape[1]
                self.connectors[str(index)] = FeatureConnector(s_channels, t_channels)
        # every trained part of the objective, outside the student: resume must restore it (empty without 'feat')
        self.learned = torch.nn.ModuleDict({"connectors": self.connectors})

    def _keep(self, key: str):
        def hook(_module, _inputs, output):
            self.captured[key] = output["out"] if isinstance(output, dict) else output
        return hook

    def __call__(self, student_logits, images, labels):
        with torch.no_grad():
            teacher_logits = match_size(self.teacher(images), student_logits)
        weight = None if self.class_weights is None else self.class_weights.to(student_logits.device)
        ce = F.cross_entropy(student_logits, labels, ignore_index=self.ignore_index, weight=weight)
        loss = self.ce_weight * ce
        parts = {"ce": ce.item()}
        if "kl" in self.terms:
            kl = pixel_kl(student_logits, teacher_logits, self.temperature)
            loss = loss + self.terms["kl"] * kl
            parts["kl"] = kl.item()
        if "cwd" in self.terms:
            cwd = channel_wise(student_logits, teacher_logits, self.temperature)
            loss = loss + self.terms["cwd"] * cwd
            parts["cwd"] = cwd.item()
        if self.pairs:
            feat = sum(feature_loss(self.connectors[str(i)](self.captured[f"s:{s}"]), self.captured[f"t:{t}"].detach(),
                                    self.feature_kind, self.temperature)
                       for i, (s, t) in enumerate(self.pairs)) / len(self.pairs)
            loss = loss + self.terms["feat"] * feat
            parts["feat"] = feat.item()
        return loss, parts
