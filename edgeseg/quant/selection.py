"""``--method auto``: the calibration method whose INT8 model agrees best with FP32, without labels.

No threshold rule wins everywhere: on the CamVid student mse was best and minmax worst;
on the pruned student of the first CamVid run minmax was best by a whole mIoU point
(benchmarks/results/int8_accuracy.md as committed in 42f5f68). What matters is how often
the INT8 model still predicts the class the FP32 model predicts, so each candidate's
Q/DQ model is run on calibration images and the share of pixels whose argmax matches
FP32's is measured; the most faithful candidate wins, and no labels are needed. On
those two models it picked mse and minmax, the best single methods by val mIoU there;
benchmarks/int8_accuracy.py records the pick and every candidate's agreement.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np


def _argmax_maps(model_path: str | Path, batches: List[np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: batch})[0].argmax(axis=1) for batch in batches]


class PredictionAgreement:
    """Per-pixel argmax agreement of candidate models with one FP32 model on fixed images."""

    def __init__(self, fp32: str | Path, batches: List[np.ndarray]):
        self.batches = batches
        self.reference = _argmax_maps(fp32, batches)

    def percent(self, candidate: str | Path) -> float:
        maps = _argmax_maps(candidate, self.batches)
        same = sum(int((a == b).sum()) for a, b in zip(maps, self.reference))
        return round(100.0 * same / sum(r.size for r in self.reference), 4)
