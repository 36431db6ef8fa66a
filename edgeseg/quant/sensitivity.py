"""Keeping INT8 within an accuracy budget: rank layers by how much INT8 hurts them, keep the worst in float.

Ranking: for each quantised compute layer (Conv, ConvTranspose, Gemm, MatMul), the
model is quantised with that one layer left in float and its mIoU measured; the layers
whose float version recovers the most mIoU are the most sensitive. Fitting: layers
are moved to float in that order, re-measuring the whole model each time, until the
drop against FP32 is within the budget.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.quant.qdq import CONV_OPS, write_qdq
from edgeseg.runtime import native
from edgeseg.runtime.preprocess import preprocess, resize_label
from edgeseg.spec import DatasetInfo, InputSpec

Ranges = Dict[str, Tuple[float, float]]


@dataclass
class EvalSet:
    """Pre-processed images and labels held in memory, so each of the many evaluations only runs the model."""

    batches: List[np.ndarray]
    labels: List[np.ndarray]
    info: DatasetInfo

    def subset(self, count: int) -> "EvalSet":
        picks = np.linspace(0, len(self.batches) - 1, min(count, len(self.batches))).astype(int)
        return EvalSet([self.batches[i] for i in picks], [self.labels[i] for i in picks], self.info)

    def halves(self) -> Tuple["EvalSet", "EvalSet"]:
        """(first half, second half) in split order; the first gets the odd image out.

        Contiguous rather than interleaved: neighbouring images of a video split
        (CamVid's val is driving sequences) are near-duplicates, so alternate frames would
        leak what one half saw into the other.
        """
        cut = (len(self.batches) + 1) // 2
        return (EvalSet(self.batches[:cut], self.labels[:cut], self.info),
                EvalSet(self.batches[cut:], self.labels[cut:], self.info))


def load_eval_set(data: str, spec: InputSpec, max_images: Optional[int] = None, *, classes=None,
                  ignore_index: int = 255) -> EvalSet:
    """``data``'s val split, pre-processed; ``classes`` (the model's ClassCount) decides the class count where no
    dataset.yaml does, and ``ignore_index`` the unlabelled value."""
    from edgeseg.data.dataset import resolve_split

    split = resolve_split(data, "val", classes=classes, ignore_index=ignore_index)
    count = len(split) if not max_images else min(max_images, len(split))
    return EvalSet([preprocess(split.image(i), spec) for i in range(count)], [split.label(i) for i in range(count)],
                   split.info)


def onnx_miou(model: str | Path, evalset: EvalSet, *, fused: bool = True) -> float:
    """mIoU (%) of an ONNX model on an EvalSet, at the labels' native size, from one confusion matrix.

    ``fused=False`` turns ONNX Runtime's graph optimisations off, so a Q/DQ model runs as
    written (QuantizeLinear/DequantizeLinear around float ops) instead of through the
    integer kernels ORT fuses it into, whose accumulation saturates on x86 CPUs without
    VNNI (quant/cpu_int8.py): the model's own arithmetic, apart from this CPU's kernels.
    """
    from edgeseg.metrics import mean_iou

    return round(mean_iou(onnx_frame_confusions(model, evalset, fused=fused).sum(0)), 4)


def onnx_frame_confusions(model: str | Path, evalset: EvalSet, *, fused: bool = True) -> np.ndarray:
    """One confusion matrix per image, (images, classes, classes): their sum is onnx_miou's matrix, and
    metrics.paired_miou_interval tells from them whether two models differ by more than the images' chance."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    classes = evalset.info.num_classes
    confusions = np.zeros((len(evalset.labels), classes, classes), dtype=np.int64)
    for confusion, batch, label in zip(confusions, evalset.batches, evalset.labels):
        pred = native.argmax(session.run(None, {name: batch})[0])[0]
        native.accumulate_confusion(confusion, resize_label(pred, *label.shape[:2]), label, evalset.info.ignore_index)
    return confusions


def quantized_layers(model_path: str | Path, kept_float: Sequence[str]) -> List[str]:
    """Names of the compute layers that get INT8 (those not already kept in float)."""
    import onnx

    from edgeseg.quant.qdq import ensure_node_names

    model = onnx.load(str(model_path))
    ensure_node_names(model)
    kept = set(kept_float)
    return [n.name for n in model.graph.node if n.op_type in CONV_OPS and n.name not in kept]


class Quantizer:
    """Writes Q/DQ variants of one FP32 model with fixed ranges, and measures them.

    A context manager: the candidate models live in a temporary folder that is removed
    when the ``with`` block ends, however it ends.
    """

    def __init__(self, fp32: Path, ranges: Ranges, symmetric: bool, evalset: EvalSet,
                 bias_shifts: Optional[Dict[str, np.ndarray]] = None, quantize_outputs: bool = False):
        self.fp32, self.ranges, self.symmetric, self.evalset = fp32, ranges, symmetric, evalset
        self.bias_shifts, self.quantize_outputs = bias_shifts, quantize_outputs
        self._folder: Optional[tempfile.TemporaryDirectory] = None

    def __enter__(self) -> "Quantizer":
        self._folder = tempfile.TemporaryDirectory(prefix="edgeseg-sensitivity-")
        return self

    def __exit__(self, *exc) -> None:
        self._folder.cleanup()
        self._folder = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            raise RuntimeError("use Quantizer inside a `with` block: its candidate models need a folder")
        return Path(self._folder.name)

    def miou(self, float_layers: Sequence[str], evalset: Optional[EvalSet] = None) -> float:
        path = self.folder / "candidate.onnx"
        write_qdq(self.fp32, path, self.ranges, symmetric=self.symmetric, nodes_to_exclude=float_layers,
                  bias_shifts=self.bias_shifts, quantize_outputs=self.quantize_outputs)
        return onnx_miou(path, evalset or self.evalset)


def rank_layers(quantizer: Quantizer, layers: Sequence[str], evalset: EvalSet,
                progress: Optional[Callable[[int], None]] = None) -> List[Tuple[str, float]]:
    """[(layer, mIoU with only that layer in float)], most sensitive first."""
    scores = []
    for layer in layers:
        scores.append((layer, quantizer.miou([layer], evalset)))
        if progress:
            progress(1)
    return sorted(scores, key=lambda item: -item[1])


def fit_budget(quantizer: Quantizer, ranking: Sequence[Tuple[str, float]], fp32_miou: float, max_drop: float,
               progress: Optional[Callable[[int], None]] = None) -> Tuple[List[str], float, List[dict]]:
    """Move layers to float in ranking order until fp32_miou - int8_miou <= max_drop.

    Returns (float layers, final INT8 mIoU, one record per step).
    """
    float_layers: List[str] = []
    steps = []
    miou = quantizer.miou(float_layers)
    for layer, _ in ranking:
        if fp32_miou - miou <= max_drop:
            break
        float_layers.append(layer)
        miou = quantizer.miou(float_layers)
        steps.append({"float_layers": len(float_layers), "added": layer, "miou": miou})
        if progress:
            progress(1)
    return float_layers, miou, steps
