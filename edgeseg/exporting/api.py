"""``edgeseg export``: PyTorch model -> ONNX, simplified, checked and verified against PyTorch."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch

from edgeseg.checkpoint import load_model
from edgeseg.console import say
from edgeseg.errors import AccuracyError, ConfigError, InputFileError
from edgeseg.fileio import atomic_path, check_output_path
from edgeseg.sidecar import read_sidecar, write_sidecar
from edgeseg.exporting.verify import verification_images, compare_outputs

INPUT_NAME, OUTPUT_NAME = "input", "logits"
MIN_OPSET = 17
MIN_AGREEMENT = 99.9  # % of pixels whose argmax must agree with PyTorch


def export_onnx(model: torch.nn.Module, path: Path, height: int, width: int, opset: int) -> None:
    """Export with a dynamic batch dimension and fixed spatial size (what TensorRT builds fastest)."""
    dummy = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice is not the user's concern
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)


def simplify(path: Path) -> bool:
    """Fold constants and fuse redundant nodes with onnxslim; keep the original if it fails."""
    import onnx
    import onnxslim

    try:
        slimmed = onnxslim.slim(onnx.load(str(path)))
    except Exception as exc:  # a simplifier bug must not block the export; the model stays valid
        say(f"[yellow]onnxslim could not simplify the model ({exc}); keeping it unsimplified[/yellow]")
        return False
    onnx.save(slimmed, str(path))
    return True


def export(model: str, out: Optional[str] = None, *, opset: int = 17, data: Optional[str] = None,
           verify_images: int = 8, simplify_model: bool = True, trust_checkpoint: bool = False) -> dict:
    """Export ``model`` to ONNX at ``out`` (default: the model's name with .onnx) and verify it.

    The ONNX model is run in ONNX Runtime on real images next to PyTorch; the maximum
    absolute difference and the % of pixels whose argmax agrees go to the sidecar, and
    the export fails (writing nothing) when agreement is below 99.9%.

    >>> edgeseg.export("pruned.pt", "pruned.onnx")  # doctest: +SKIP
    """
    import onnx

    out_path = check_output_path(out or Path(model).with_suffix(".onnx"))
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset} is too old; use {MIN_OPSET} or newer.")
    loaded = load_model(model, trust_checkpoint=trust_checkpoint)
    spec = loaded.input_spec
    if spec is None:
        raise InputFileError(f"{model} does not record its input size; re-save it with edgeseg or add a sidecar.")
    net = loaded.model.eval()
    parent_meta = read_sidecar(model)
    with atomic_path(out_path) as tmp:
        export_onnx(net, tmp, spec.height, spec.width, opset)
        simplified = simplify(tmp) if simplify_model else False
        onnx.checker.check_model(str(tmp))
        batch, source = verification_images(spec, data, parent_meta, verify_images)
        parity = compare_outputs(net, tmp, batch)
        parity["images"] = source
        if parity["argmax_agreement"] < MIN_AGREEMENT:
            raise AccuracyError(
                f"The ONNX model agrees with PyTorch on only {parity['argmax_agreement']:.3f}% of pixels "
                f"(needs {MIN_AGREEMENT}%); the export is not trustworthy, try another --opset.")
    say(f"Exported {out_path} (opset {opset}); argmax agreement with PyTorch {parity['argmax_agreement']:.3f}%, "
        f"max |diff| {parity['max_abs_diff']:.2e}")
    model_facts = parent_meta.get("model") or {"arch": loaded.arch, "num_classes": loaded.num_classes}
    return write_sidecar(out_path, "onnx", input_spec=spec, dataset=loaded.dataset, parent=model, stage="export",
                         model=model_facts, precision="fp32",
                         onnx={"opset": opset, "simplified": simplified, "input": INPUT_NAME, "output": OUTPUT_NAME,
                               "dynamic_batch": True},
                         parity=parity)
