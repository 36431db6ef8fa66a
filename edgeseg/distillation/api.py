"""``edgeseg distill``: train a small student from a frozen teacher plus the ground truth."""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

from edgeseg.arch import canonical_name, create_model
from edgeseg.arch.backbones import check_backbone_option, load_backbone_weights
from edgeseg.checkpoint import LoadedModel, load_model
from edgeseg.console import say
from edgeseg.data.dataset import DEFAULT_IGNORE_INDEX, ClassCount, ClassCountError
from edgeseg.data.torch_dataset import SegmentationDataset, augmentation
from edgeseg.distillation.losses import match_size, pixel_kl
from edgeseg.distillation.objective import DistillationObjective, parse_loss
from edgeseg.errors import ConfigError
from edgeseg.fileio import check_output_path
from edgeseg.spec import InputSpec
from edgeseg.training import class_weights as weighting
from edgeseg.training import distributed
from edgeseg.training.api import ResultWriter
from edgeseg.training.data import check_classes, parse_size, training_splits
from edgeseg.training.loop import TrainConfig, fit, training_config


def distill_settings(class_weights, temperature: float, terms: dict, feature_pairs, feature_loss: str) -> dict:
    """What distillation's objective is made of but learns nothing of, checked on --resume (training.state)."""
    settings = {"class_weights": class_weights, "temperature": temperature, "loss_weight": terms}
    if "feat" in terms:  # another pairing or distance with connectors of the same shapes would pass unseen
        settings.update(feature_pairs=_pairs(feature_pairs), feature_loss=feature_loss)
    return settings


def kd_loss(teacher: torch.nn.Module, ignore_index: int, temperature: float, kd_weight: float, class_weights=None):
    """Ground-truth cross-entropy (weighted per class by ``class_weights``, a list, if given) + kd_weight *
    pixel-wise KL to the frozen teacher (used by prune's fine-tuning)."""
    from edgeseg.training.class_weights import as_tensor

    weight = as_tensor(class_weights)

    def loss_fn(student_logits, images, labels):
        with torch.no_grad():
            teacher_logits = match_size(teacher(images), student_logits)
        ce = F.cross_entropy(student_logits, labels, ignore_index=ignore_index,
                             weight=None if weight is None else weight.to(student_logits.device))
        kd = pixel_kl(student_logits, teacher_logits, temperature)
        return ce + kd_weight * kd, {"ce": ce.item(), "kd": kd.item()}

    return loss_fn


def _pairs(feature_pairs) -> list:
    pairs = []
    for pair in feature_pairs or ():
        student_name, sep, teacher_name = pair.partition(":")
        if not sep:
            raise ConfigError(f"--feature-pair '{pair}' is not STUDENT_MODULE:TEACHER_MODULE.")
        pairs.append((student_name, teacher_name))
    return pairs


def _pretrained_teacher(name: str, weights: str, info) -> LoadedModel:
    """torchvision's pretrained segmentation model ``name`` (torchvision:NAME) with its ``weights``, as the teacher."""
    from edgeseg.arch.backbones import load_segmentation_weights

    arch = canonical_name(name)
    model = create_model(arch, info.num_classes)
    load_segmentation_weights(model, arch, weights, allow_new_classes=False)
    return LoadedModel(model.eval(), arch, info.num_classes, None, info, rebuildable=False)


def distill(teacher: str, data: str, out: str, *, student: str = "mobilenetv3", epochs: int = 30,
            batch_size: int = 8, optimizer: str = "adamw", lr: Optional[float] = None, weight_decay: float = 1e-4,
            temperature: float = 4.0, kd_weight: float = 1.0, loss: str = "kl", loss_weights: Optional[dict] = None,
            feature_pairs: Optional[list] = None, feature_loss: str = "mse", input_size: Optional[str] = None,
            seed: int = 0, val_every: int = 5, trust_checkpoint: bool = False, threads: Optional[int] = None,
            resume: bool = False, grad_clip: float = 0.0, ema_decay: float = 0.0, warmup_epochs: float = 0.0,
            teacher_arch: Optional[str] = None, device: str = "cpu", amp: bool = True, sync_bn: bool = False,
            tensorboard: bool = True, backbone_weights: Optional[str] = None,
            teacher_weights: Optional[str] = None, student_args: Optional[dict] = None,
            ignore_index: int = DEFAULT_IGNORE_INDEX, training: Optional[TrainConfig] = None,
            class_weights: Optional[str] = None) -> dict:
    """Distill ``teacher`` into a fresh ``student`` on ``data`` and write the student checkpoint to ``out``.

    ``loss`` joins terms with '+': ``kl`` (pixel-wise KL), ``cwd`` (channel-wise
    distillation), ``feat`` (feature distillation on ``feature_pairs``); cross-entropy on
    the labels is always added. The teacher is frozen (eval mode, no gradients); its
    logits are resized to the student's output size. The teacher may be an edgeseg
    checkpoint, TorchScript, a ``torch.export`` program (``.pt2``), or a bare state_dict
    with ``teacher_arch`` (a registered name, or ``torchvision:NAME`` such as
    ``torchvision:deeplabv3_resnet101``). The best validated student also goes to
    ``<out stem>.best.pt``; under ``torchrun`` the work is shared by DDP. ``class_weights`` weighs
    the labels' cross-entropy per class as in ``train`` (default: the teacher's training mode). The student's
    encoder starts from ``backbone_weights`` as in ``train``; ``student_args`` go to its
    constructor (``{"base_channels": 8}`` for a U-Net) and into its checkpoint, which rebuilds it. A teacher may also be
    torchvision's pretrained segmentation model by name, ``teacher="torchvision:NAME"``
    with ``teacher_weights`` (e.g. COCO_WITH_VOC_LABELS_V1), read from torchvision's cache.
    The class count comes from ``data``'s dataset.yaml (or standard layout), else from the
    teacher; ``ignore_index`` is the unlabelled value where no dataset.yaml says it.
    ``training`` gives the loop's options (epochs, batch size, optimizer, ...) as one
    TrainConfig instead of the keywords of the same names. Returns the student's sidecar.

    >>> edgeseg.distill("teacher.pt", "synthetic", "student.pt", student="mobilenetv3")  # doctest: +SKIP
    """
    check_output_path(out)
    weighting.check(class_weights)
    if temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}.")
    weights = dict(loss_weights or {})
    weights.setdefault("kl", kd_weight)
    terms = parse_loss(loss, weights)
    config = training_config(training, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                             weight_decay=weight_decay, val_every=val_every, seed=seed, threads=threads,
                             grad_clip=grad_clip, ema_decay=ema_decay, warmup_epochs=warmup_epochs, device=device,
                             amp=amp, sync_bn=sync_bn, tensorboard=tensorboard)
    from edgeseg.arch.huggingface import student_from
    from edgeseg.huggingface import find_folder, model_name, read_folder

    hf_student = find_folder(student)  # a Hugging Face folder as the student: checked before the data is read
    student_arch = model_name(read_folder(hf_student)) if hf_student else canonical_name(student)
    try:
        train_split, val_split = training_splits(data, ignore_index=ignore_index)
    except ClassCountError:
        if teacher_weights:
            raise  # torchvision's weights are loaded for the data's class count
        train_split = None  # the data does not say its class count: the teacher does
    if train_split is not None and teacher_weights:
        loaded = _pretrained_teacher(teacher, teacher_weights, train_split.info)
    else:
        loaded = load_model(teacher, trust_checkpoint=trust_checkpoint, arch=teacher_arch,
                            num_classes=train_split.info.num_classes if train_split is not None else None)
    teacher_count = ClassCount(loaded.num_classes, f"Teacher {teacher}", "use a teacher trained for this data")
    if train_split is None:
        train_split, val_split = training_splits(data, classes=teacher_count, ignore_index=ignore_index)
    check_classes(teacher_count, train_split)
    info = train_split.info
    if input_size:
        height, width = parse_size(input_size)
        spec = InputSpec(height, width, *(() if loaded.input_spec is None else
                                          (loaded.input_spec.mean, loaded.input_spec.std, loaded.input_spec.color)))
    else:
        spec = loaded.input_spec or InputSpec(*train_split.image(0).shape[:2])
    workers = distributed.current()
    teacher_model = loaded.model.eval().to(distributed.device_for(config.device, workers))
    for param in teacher_model.parameters():
        param.requires_grad_(False)
    torch.manual_seed(config.seed)
    if hf_student:  # the folder's weights are the student's start; a new classifier for other classes
        model, student_arch, student_args = student_from(hf_student, info.num_classes)
    else:
        model = create_model(student_arch, info.num_classes, **(student_args or {}))
    # the student's encoder may start from ImageNet; it keeps the teacher's normalisation, which sees the same images
    backbone = load_backbone_weights(model, student_arch, check_backbone_option(backbone_weights))
    # the labels' cross-entropy weighs classes as the teacher's training did, unless told otherwise
    mode = class_weights if class_weights is not None else \
        (loaded.meta.get("class_weights") or {}).get("mode") or weighting.NONE
    ce_weights = weighting.resolve(mode, train_split, info.num_classes)
    objective = DistillationObjective(teacher_model, model, terms, ignore_index=info.ignore_index,
                                      temperature=temperature, feature_pairs=_pairs(feature_pairs),
                                      feature_kind=feature_loss, input_size=(spec.height, spec.width),
                                      class_weights=ce_weights)
    described = " + ".join(f"{w} x {t}" for t, w in terms.items())
    if workers.is_main:
        say(f"Distilling {loaded.arch} into {student_arch} on {len(train_split)} images at {spec.height}x{spec.width} "
            f"(cross-entropy + {described}, T={temperature})")
        if ce_weights is not None:
            say(f"Class weights ({mode}): {weighting.describe(ce_weights, info.classes or [])}")
    train_set = SegmentationDataset(train_split, spec, augmentation(config.augment))
    val_set = SegmentationDataset(val_split, spec) if val_split is not None else None
    settings = {"teacher": str(teacher), "teacher_arch": loaded.arch, "loss": "ce+" + "+".join(terms),
                "weights": terms, "temperature": temperature, "feature_pairs": _pairs(feature_pairs),
                "feature_loss": feature_loss if "feat" in terms else None,
                "backbone_weights": backbone.to_dict() if backbone else None}
    writer = ResultWriter(out, student_arch, info, spec, data, config, "distill", parent=teacher,
                          arch_args=student_args or None,
                          extra={"distill": settings, "class_weights": {"mode": mode, "weights": ce_weights}})
    history = fit(model, train_set, val_set, objective, config, num_classes=info.num_classes,
                  ignore_index=info.ignore_index, description=f"distill {student_arch}",
                  loss_module=objective.learned, checkpoint_to=out, resume=resume, on_best=writer.best,
                  loss_settings=distill_settings(ce_weights, temperature, terms, feature_pairs, feature_loss))
    return writer.final(model, history) if workers.is_main else {}
