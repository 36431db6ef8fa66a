"""Checking an exported model against the PyTorch model it came from, on real images."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from edgeseg.errors import DataError
from edgeseg.runtime.preprocess import preprocess
from edgeseg.spec import InputSpec


def verification_images(spec: InputSpec, data: Optional[str], parent_meta: dict, count: int) -> Tuple[np.ndarray, str]:
    """A batch of real pre-processed images: from --data, else the training data, else synthetic scenes."""
    from edgeseg.data.dataset import resolve_split

    candidates = [data, (parent_meta.get("training") or {}).get("data")]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            split = resolve_split(candidate, "val", require_labels=False)
        except DataError:
            if candidate == data:
                raise
            continue  # the training data may have moved since; fall through
        picks = np.linspace(0, len(split) - 1, min(count, len(split))).astype(int)
        return np.concatenate([preprocess(split.image(int(i)), spec) for i in picks]), str(split.root)
    from edgeseg.data.synthetic import render_scene

    images = [render_scene(np.random.default_rng([7, i]), spec.height, spec.width)[0] for i in range(count)]
    return np.concatenate([preprocess(im, spec) for im in images]), "synthetic scenes"


@torch.no_grad()
def compare_outputs(model: torch.nn.Module, onnx_path: Path, batch: np.ndarray) -> dict:
    """Max |difference| of logits and % of pixels whose argmax agrees, ONNX Runtime vs PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ref = model(torch.from_numpy(batch))
    ref = (ref["out"] if isinstance(ref, dict) else ref).numpy()
    got = session.run(None, {name: batch})[0]
    return {"num_images": int(batch.shape[0]), "max_abs_diff": float(np.abs(ref - got).max()),
            "argmax_agreement": round(float(100.0 * (ref.argmax(1) == got.argmax(1)).mean()), 4)}
