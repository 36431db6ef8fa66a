"""edgeseg: make a trained PyTorch segmentation model fast on edge GPUs without losing accuracy.

Every pipeline stage is one function here and one CLI verb of the same name::

    import edgeseg
    edgeseg.train(arch="unet", data="synthetic", out="teacher.pt")

The functions are imported lazily so that ``import edgeseg`` (and ``edgeseg --help``)
never pulls in torch; the deploy side must run on machines that do not have it.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# verb -> module that defines a function of the same name
_VERBS = {
    "train": "edgeseg.training.api",
    "distill": "edgeseg.distillation.api",
    "prune": "edgeseg.pruning.api",
    "export": "edgeseg.exporting.api",
    "calibrate": "edgeseg.quant.api",
    "qat": "edgeseg.quantization_aware.api",
    "build_engine": "edgeseg.engine.api",
    "bench": "edgeseg.benchmark.api",
    "eval": "edgeseg.benchmark.api",
    "report": "edgeseg.report.api",
    "info": "edgeseg.artifact_info",
    "demo": "edgeseg.pipeline",
    "predict": "edgeseg.predict.api",
    "Segmenter": "edgeseg.predict.segmenter",  # not a verb: the class applications call
    "ModelFacts": "edgeseg.spec",  # not a verb: what a model made elsewhere does not record
    "TrainConfig": "edgeseg.training.loop",  # not a verb: the training options train, distill, prune and qat share
}

__all__ = sorted(_VERBS) + ["__version__"]


def __getattr__(name: str):
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
