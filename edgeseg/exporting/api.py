"""``edgeseg export``: PyTorch model -> ONNX, simplified, checked and verified against PyTorch."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import torch

from edgeseg.checkpoint import load_model
from edgeseg.console import say
from edgeseg.errors import AccuracyError, ConfigError, InputFileError
from edgeseg.fileio import atomic_path, check_output_path, out_of_space_error
from edgeseg.sidecar import read_sidecar, write_sidecar
from edgeseg.spec import ModelFacts
from edgeseg.exporting.argmax import CLASS_MAP_OUTPUT
from edgeseg.exporting.verify import verification_images, compare_outputs

INPUT_NAME, OUTPUT_NAME = "input", "logits"
# 13: per-channel QuantizeLinear/DequantizeLinear (the axis attribute), which calibrate writes. 16 is how a
# transformer (SegFormer) reaches TensorRT 8.5, whose parser lacks opset 17's LayerNormalization
MIN_OPSET = 13
MIN_AGREEMENT = 99.9  # % of pixels whose argmax must agree with PyTorch


def export_onnx(model: torch.nn.Module, path: Path, height: int, width: int, opset: int) -> None:
    """Export with a dynamic batch dimension and fixed spatial size (what TensorRT builds fastest)."""
    dummy = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice is not the user's concern
        try:  # on failure the exporter prints the whole TorchScript graph: kept out of the user's terminal
            with _native_stdout_silenced():
                torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                                  do_constant_folding=True)
        except Exception as exc:  # the exporter's own error types; their text can hold the whole TorchScript graph
            full = out_of_space_error(exc)  # a full disk is the disk's sentence, not the exporter's
            if full is not None:
                raise full from exc
            raise export_refusal(exc, height, width, opset) from exc


@contextlib.contextmanager
def _native_stdout_silenced():
    """File descriptor 1 into a scratch file for the block: torch's C++ side prints there, not to sys.stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def export_refusal(exc: Exception, height: int, width: int, opset: int) -> ConfigError:
    """One sentence for a model torch.onnx cannot write, with what may get it through."""
    text = str(exc).strip()
    first = (text.splitlines() or [type(exc).__name__])[0][:200]
    if "input size not accessible" in text:  # BEiT/Data2VecVision: adaptive pooling under the dynamic batch
        hint = ("its adaptive pooling exports only with a fixed batch, and edgeseg writes a dynamic one (TensorRT's "
                "profiles need it); bench, eval and predict run it in PyTorch")
    elif "adaptive" in text.lower():  # UperNet's pyramid pooling (pool scales 1, 2, 3, 6)
        hint = ("its adaptive pooling has no ONNX form at this size; pick an --input-size whose deepest feature map "
                "divides by every pool size (UperNet's 1, 2, 3, 6: a multiple of 192 at stride 32)")
    elif "col2im" in text.lower() and opset < 18:  # MobileViTV2's unfold/fold
        hint = "its fold needs ONNX's Col2Im: try --opset 18"
    else:
        hint = "bench, eval and predict still run it in PyTorch"
    return ConfigError(f"torch.onnx could not export this model at {height}x{width}, opset {opset} ({first}); {hint}.")


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
           verify_images: int = 8, simplify_model: bool = True, trust_checkpoint: bool = False,
           argmax: bool = False, argmax_dtype: Optional[str] = None,
           facts: Optional[ModelFacts] = None) -> dict:
    """Export ``model`` to ONNX at ``out`` (default: the model's name with .onnx) and verify it.

    The ONNX model is run in ONNX Runtime on real images next to PyTorch; the maximum
    absolute difference and the % of pixels whose argmax agrees go to the sidecar, and
    the export fails (writing nothing) when agreement is below 99.9%.

    With ``argmax`` the model outputs its NxHxW class map (``argmax_dtype`` uint8, the
    default up to 255 classes, or int32 for TensorRT 8.5) instead of the logits: the
    argmax is appended to the verified logits graph, and the export fails unless the
    class map equals the logits model's argmax on every pixel of the verification images.

    >>> edgeseg.export("pruned.pt", "pruned.onnx")  # doctest: +SKIP
    """
    import onnx

    from edgeseg.huggingface import default_output, find_folder

    folder = None if out else find_folder(model)
    default = default_output(folder, ".onnx") if folder else Path(model).with_suffix(".onnx")
    out_path = check_output_path(out or default)
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset} is too old; use {MIN_OPSET} or newer.")
    loaded = load_model(model, trust_checkpoint=trust_checkpoint, facts=facts)  # facts: for files made elsewhere
    spec = loaded.input_spec
    if spec is None:
        raise InputFileError(f"{model} does not record its input size; give it with --input-size HEIGHTxWIDTH.")
    net = loaded.model.eval()
    parent_meta = read_sidecar(model)
    if argmax:
        from edgeseg.exporting.argmax import check_dtype, default_dtype

        argmax_dtype = check_dtype(argmax_dtype or default_dtype(loaded.num_classes), loaded.num_classes)
    elif argmax_dtype:
        raise ConfigError("--argmax-dtype applies only with --argmax; add --argmax or drop it.")
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
        if argmax:
            parity["class_map_agreement"] = _append_class_map(tmp, argmax_dtype, batch)
    if argmax:
        say(f"The model outputs its class map ({argmax_dtype}, output '{CLASS_MAP_OUTPUT}'), equal to the logits "
            f"model's argmax on every verification pixel")
    say(f"Exported {out_path} (opset {opset}); argmax agreement with PyTorch {parity['argmax_agreement']:.3f}%, "
        f"max |diff| {parity['max_abs_diff']:.2e}")
    model_facts = parent_meta.get("model") or {"arch": loaded.arch, "num_classes": loaded.num_classes}
    return write_sidecar(out_path, "onnx", input_spec=spec, dataset=loaded.dataset, parent=model, stage="export",
                         model=model_facts, precision="fp32",
                         onnx={"opset": opset, "simplified": simplified, "input": INPUT_NAME,
                               "output": CLASS_MAP_OUTPUT if argmax else OUTPUT_NAME, "dynamic_batch": True,
                               "output_kind": "class_map" if argmax else "logits",
                               "output_dtype": argmax_dtype if argmax else "float32"},
                         parity=parity, source=loaded.meta.get("source"))


def _append_class_map(path: Path, dtype: str, batch) -> float:
    """Put ArgMax -> Cast on the verified logits model at ``path``; the % of pixels equal to its argmax (must be 100)."""
    import onnxruntime as ort

    from edgeseg.exporting.argmax import add_class_map_file

    def run():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch})[0]

    expected = run().argmax(1)  # numpy and ONNX ArgMax both take the first of equal maxima
    add_class_map_file(path, dtype)
    agreement = round(float(100.0 * (run() == expected).mean()), 4)
    if agreement < 100.0:
        raise AccuracyError(f"The class-map model differs from the logits model's argmax on "
                            f"{100 - agreement:.4f}% of pixels; export without --argmax and report this.")
    return agreement
