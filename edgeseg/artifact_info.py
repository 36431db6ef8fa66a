"""``edgeseg info``: what an artifact is, from its sidecar, and whether the file still matches it.

Files without a sidecar are described from what they hold: an ONNX graph (its inputs,
outputs, operators, and parameters and MACs counted from it), a PyTorch checkpoint
(loaded with the user's model facts), a TensorRT calibration cache (its header).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from rich.markup import escape

from edgeseg.console import out
from edgeseg.errors import InputFileError, MissingDependencyError
from edgeseg.fileio import require_file, sha256_of
from edgeseg.runtime.loader import ENGINE_SUFFIXES, TORCH_SUFFIXES
from edgeseg.sidecar import model_output, read_sidecar
from edgeseg.spec import ModelFacts

CHECKPOINT_SUFFIXES = tuple(dict.fromkeys(TORCH_SUFFIXES + (".pt", ".pth", ".ckpt", ".pt2")))
# what the one sentence for a file info cannot read lists
READS = ("an artifact edgeseg made (with its sidecar, the .json beside it), any ONNX model, a PyTorch checkpoint "
         "(.pt/.pth/.ckpt/.pt2; a bare state_dict is loaded with --arch) or a TensorRT calibration cache")


def info(artifact: str, as_json: bool = False, facts: Optional[ModelFacts] = None,
         trust_checkpoint: bool = False) -> dict:
    """Print and return the sidecar of ``artifact``, with ``sha256_matches`` added; for a file without one,
    what the file itself says (``facts`` complete a checkpoint or an ONNX made elsewhere).

    >>> edgeseg.info("pruned.int8.onnx")  # doctest: +SKIP
    >>> edgeseg.info("model_29.pth", facts=ModelFacts(arch="torchvision:lraspp_mobilenet_v3_large"))  # doctest: +SKIP
    """
    facts = facts or ModelFacts()
    from edgeseg.huggingface import find_folder

    folder = find_folder(artifact)
    if folder is not None:
        return _huggingface_folder(folder, as_json, facts, given=str(artifact))
    path = require_file(artifact, "Artifact")
    meta = read_sidecar(path)
    suffix = path.suffix.lower()
    if not meta and suffix == ".onnx":
        return _foreign_onnx(path, as_json, facts)
    if not meta and suffix in CHECKPOINT_SUFFIXES:
        return _checkpoint(path, as_json, facts, trust_checkpoint)
    if not meta:
        cache = read_calibration_cache(path)
        if cache is not None:
            return _calibration_cache(path, cache, as_json)
        if suffix in ENGINE_SUFFIXES:
            raise InputFileError(f"{path} has no sidecar {path.name}.json; for an engine built elsewhere, bench it "
                                 f"with --input-size and --trust-engine (info reads {READS}).")
        raise InputFileError(f"{path} is none of the files edgeseg info reads: {READS}.")
    meta = dict(meta, sha256_matches=meta.get("sha256") == sha256_of(path))
    size = _sidecar_size(path, meta)
    if size:  # the sidecar does not say them (an export of a checkpoint made elsewhere): counted from the graph
        meta["model"] = dict(meta.get("model") or {}, **size)
    if as_json:
        out.print_json(json.dumps(meta))
        return meta
    model = meta.get("model") or {}
    spec = meta.get("input") or {}
    data = meta.get("dataset") or {}
    lines = [
        f"[bold]{path.name}[/bold]  ({meta.get('kind')}, made by `{meta.get('stage', '?')}`)",
        f"  precision     {meta.get('precision', 'fp32')}",
        f"  architecture  {model.get('arch', '?')}  {_size_text(model)}",
        f"  input         {spec.get('height')}x{spec.get('width')} {spec.get('color', 'RGB')}  "
        f"mean {spec.get('mean')}  std {spec.get('std')}",
        f"  classes       {data.get('num_classes')} ({', '.join(data.get('classes') or [])}), "
        f"ignore {data.get('ignore_index')}",
        f"  size          {meta.get('size_mb')} MB",
        f"  sha256        {meta.get('sha256', '?')[:16]}…  "
        + ("[green]matches the file[/green]" if meta["sha256_matches"] else "[red]does NOT match the file[/red]"),
    ]
    if meta.get("onnx"):
        output = model_output(meta)
        lines.append("  output        " + ("logits (the host takes the argmax)" if output["kind"] == "logits" else
                                          f"class map, {output['dtype']} (argmax in the graph: export --argmax)"))
    if meta.get("parent"):
        lines.append(f"  made from     {meta['parent'].get('artifact')}")
    for section in ("parity", "prune", "quantization", "engine", "training"):
        if meta.get(section):
            summary = {k: v for k, v in meta[section].items() if not isinstance(v, (dict, list))}
            lines.append(f"  {section:<13} " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    lines.append("  versions      " + ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()))
    for line in lines:
        out.print(line)
    return meta


def _sidecar_size(path: Path, meta: dict) -> dict:
    """Parameters and MACs an ONNX's sidecar does not say (an export of a checkpoint made elsewhere), counted from
    its graph at the sidecar's input size; nothing for an engine, which holds no graph to count."""
    from edgeseg.onnx_size import model_size

    spec = meta.get("input") or {}
    size = (spec["height"], spec["width"]) if spec.get("height") and spec.get("width") else None
    counted = model_size(meta, path, size)
    if "counted" not in counted:
        return {}
    return dict(counted, macs_input=list(size) if size and counted["macs"] is not None else None)


def _size_text(model: dict) -> str:
    """'params 1.07M  MACs 0.015G', a dash for a figure nobody knows, and what counted them when no sidecar did."""
    params, macs = model.get("params"), model.get("macs")
    text = (f"params {'-' if params is None else f'{params / 1e6:.2f}M'}  "
            f"MACs {'-' if macs is None else f'{macs / 1e9:.3f}G'}")
    if macs is not None and model.get("macs_input"):
        text += " at {}x{}".format(*model["macs_input"])
    if model.get("counted") == "onnx graph":
        text += " (counted from the ONNX graph; BatchNorm is folded into the convolutions there)"
    elif model.get("counted"):
        text += f" (counted on the {model['counted']})"
    return text


def _macs_missing(size) -> str:
    if size.macs is not None:
        return ""
    if size.input_size is None:
        return "; MACs need the input size, which is dynamic: give --input-size HEIGHTxWIDTH"
    return (f"; MACs unknown: the shapes of {len(size.unsized)} convolution or linear nodes could not be inferred "
            f"({escape(', '.join(size.unsized[:3]))})")


def _foreign_onnx(path: Path, as_json: bool, facts: ModelFacts) -> dict:
    """An ONNX another tool wrote: what its graph says, like `polygraphy inspect model`, and what verbs need."""
    from edgeseg.foreign_onnx import graph_summary
    from edgeseg.onnx_size import count_graph

    summary = dict(graph_summary(path), size_mb=round(path.stat().st_size / 1e6, 3), sha256=sha256_of(path))
    size = count_graph(path, facts.input_size)
    summary.update(size.to_dict())  # params by the counting convention, not every initializer's elements
    if as_json:
        out.print_json(json.dumps(summary))
        return summary

    def shape(tensor: dict) -> str:  # escaped: rich would take [b, 3, h, w] for markup
        dims = ", ".join(str(d) for d in tensor["shape"]) or "rank unknown"
        return escape(f"{tensor['name']}  {tensor['dtype']}  [{dims}]")

    top = list(summary["operators"].items())[:8]
    output = ("none" if not summary["outputs"] else
              "a class map (argmax in the graph)" if summary["class_map_output"] else "logits")
    lines = [f"[bold]{escape(path.name)}[/bold]  ({summary['kind']})",
             f"  producer      {escape(summary['producer'])}, opset {summary['opset'] or '? (custom domains only)'}"]
    lines += [f"  input         {shape(t)}" for t in summary["inputs"]]
    lines += [f"  output        {shape(t)}" for t in summary["outputs"]]
    lines += [f"  size          {_size_text(summary)}" + _macs_missing(size),
              f"  nodes         {summary['nodes']}: " + ", ".join(f"{op} {n}" for op, n in top)
              + (", ..." if len(summary["operators"]) > len(top) else ""),
              f"  precision     {'int8 (Q/DQ nodes)' if summary['quantized'] else 'float'}; output {output}",
              f"  file          {summary['size_mb']} MB, sha256 {summary['sha256'][:16]}…"
              + ("  (the .onnx file only: its weights are in external data files beside it)"
                 if summary["external_data"] else "")]
    if summary["cannot_run"]:
        lines.append(f"  [red]edgeseg cannot run it[/red]: {escape(summary['cannot_run'])}")
    else:
        lines.append("  edgeseg needs " + "; ".join(summary["verbs_need"]))
    for line in lines:
        out.print(line)
    return summary


def _checkpoint(path: Path, as_json: bool, facts: ModelFacts, trust_checkpoint: bool) -> dict:
    """A PyTorch checkpoint without a sidecar: loaded with the user's model facts and measured as train measures its
    models, or, for a state_dict that needs --arch and did not get it, what the file holds."""
    try:
        import torch  # noqa: F401  (the deploy side runs without it; reading a checkpoint needs it)
    except ImportError:
        raise MissingDependencyError(f"{path} is a PyTorch checkpoint, which info reads with torch, and torch is not "
                                     f"installed here: pip install torch, or run info on its ONNX export.") from None
    found = None if facts.arch else _state_dict_in(path)
    if found is not None:
        return _state_dict(path, found[0], found[1], as_json)
    from edgeseg.arch.profile import count_macs, count_params
    from edgeseg.checkpoint import load_model

    loaded = load_model(path, trust_checkpoint=trust_checkpoint, facts=facts)
    spec = loaded.input_spec
    source = loaded.meta.get("source") if loaded.foreign else None
    file_format = (source or {}).get("format") or ("edgeseg checkpoint" if loaded.rebuildable else loaded.arch)
    # the counter hooks nn.Conv2d/nn.Linear modules; TorchScript and torch.export graphs have none it can see
    macs = count_macs(loaded.model, spec.height, spec.width) if spec and loaded.rebuildable else None
    summary = {"artifact": path.name, "kind": "pytorch checkpoint, no sidecar", "format": file_format,
               "arch": loaded.arch, "num_classes": loaded.num_classes, "input": spec.to_dict() if spec else None,
               "params": count_params(loaded.model), "macs": macs, "counted": "pytorch model",
               "macs_input": [spec.height, spec.width] if macs is not None else None,
               "source": source, "size_mb": round(path.stat().st_size / 1e6, 3), "sha256": sha256_of(path)}
    if as_json:
        out.print_json(json.dumps(summary))
        return summary
    lines = [f"[bold]{escape(path.name)}[/bold]  (PyTorch checkpoint, no sidecar: {escape(file_format)})",
             f"  architecture  {escape(loaded.arch)}  {_size_text(summary)}"
             + ("" if macs is not None else
                "; MACs need --input-size HEIGHTxWIDTH" if loaded.rebuildable else
                "; MACs: export it to ONNX and info counts them from the graph"),
             "  input         " + (f"{spec.height}x{spec.width}  mean {spec.mean}  std {spec.std}" if spec else
                                   "not recorded: give --input-size HEIGHTxWIDTH"),
             f"  classes       {loaded.num_classes}"]
    if source:
        lines.append(f"  loaded        {source.get('matched')} tensors matched, {len(source.get('missing') or [])} "
                     f"missing, {len(source.get('unexpected') or [])} unexpected")
    lines.append(f"  file          {summary['size_mb']} MB, sha256 {summary['sha256'][:16]}…")
    if loaded.foreign:
        lines.append(f"  next          edgeseg export {escape(path.name)} with the same options: the ONNX's sidecar "
                     f"then records them")
    for line in lines:
        out.print(line)
    return summary


def _huggingface_folder(folder: Path, as_json: bool, facts: ModelFacts, given: str) -> dict:
    """A Hugging Face folder: what its config and image processor say, and, where torch and transformers are
    installed, its parameters and MACs counted on the model as train counts them."""
    from edgeseg.huggingface import read_folder, model_name
    from edgeseg.runtime.loader import size_bytes

    found = read_folder(folder)
    size = facts.input_size or found.input_size
    summary = {"artifact": str(folder), "kind": "Hugging Face folder", "arch": model_name(found),
               "num_classes": found.num_classes, "classes": list(found.classes), "ignore_index": found.ignore_index,
               "input": {"height": size[0], "width": size[1], "mean": list(found.mean), "std": list(found.std),
                         "color": found.color} if size else None,
               "params": None, "macs": None, "size_mb": round(size_bytes(folder) / 1e6, 3)}
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        counted = "not counted: torch and transformers are needed to build the model (pip install 'edgeseg[hf]')"
    else:
        from edgeseg.arch.profile import count_macs, count_params
        from edgeseg.checkpoint import load_model

        model = load_model(folder, facts=facts).model
        summary["params"] = count_params(model)
        summary["macs"] = count_macs(model, size[0], size[1]) if size else None
        summary["macs_input"] = list(size) if size else None
        counted = "pytorch model"
    summary["counted"] = counted
    if as_json:
        out.print_json(json.dumps(summary))
        return summary
    shown = ", ".join(found.classes[:8]) + (f", ... ({found.num_classes - 8} more)" if found.num_classes > 8 else "")
    lines = [f"[bold]{escape(folder.name)}[/bold]  (Hugging Face folder: {found.architecture})",
             f"  architecture  {model_name(found)}  " + (_size_text(summary) if summary["params"] is not None
                                                         else counted),
             "  input         " + (f"{size[0]}x{size[1]} {found.color}  mean {[round(v, 3) for v in found.mean]}  "
                                   f"std {[round(v, 3) for v in found.std]}" if size else
                                   "not in preprocessor_config.json: give --input-size HEIGHTxWIDTH"),
             f"  classes       {found.num_classes} ({escape(shown)}), ignore {found.ignore_index}",
             f"  files         {summary['size_mb']} MB in {escape(str(folder))}",
             f"  next          edgeseg export {escape(given)} (no --arch: the config says it)"]
    for line in lines:
        out.print(line)
    return summary


def _state_dict_in(path: Path):
    """(state_dict, its format) when the file is a checkpoint made elsewhere, which needs --arch to load; None for
    the files ``load_model`` reads alone (an edgeseg checkpoint, TorchScript, torch.export, a whole module) and for
    a damaged one, whose error ``load_model`` words."""
    import warnings

    import torch

    from edgeseg.checkpoint import FORMAT
    from edgeseg.foreign_checkpoint import find_state_dict, safe_globals_for_checkpoints

    suffix = path.suffix.lower()
    if suffix == ".pt2" or (suffix in (".safetensors", ".bin") and (path.parent / "config.json").is_file()):
        return None  # a torch.export program, a Hugging Face model folder's weights: they say what they are
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path)), "safetensors file"
        except Exception:  # no safetensors package, a damaged header: load_model words it
            return None
    try:
        with warnings.catch_warnings(), safe_globals_for_checkpoints():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # TorchScript, pickled modules and damaged files: load_model tells them apart
        return None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return None
    state_dict, file_format = find_state_dict(payload)
    return None if state_dict is None else (state_dict, file_format)


def _state_dict(path: Path, state_dict: dict, file_format: str, as_json: bool) -> dict:
    """What a checkpoint made elsewhere holds, without --arch.

    info exits 0 here: it was asked what the file is and it says so, with the one
    option that loads it. The file is not at fault, and the verbs that need the model
    itself (export, bench) refuse with exit 2 and the same hint.
    """
    from edgeseg.arch.torchvision_models import classes_in_state_dict

    found = classes_in_state_dict(state_dict)
    values = sum(int(t.numel()) for t in state_dict.values())
    summary = {"artifact": path.name, "kind": "pytorch checkpoint, no sidecar", "format": file_format,
               "tensors": len(state_dict), "values": values, "num_classes": found if found > 1 else None,
               "needs": "--arch", "size_mb": round(path.stat().st_size / 1e6, 3), "sha256": sha256_of(path)}
    if as_json:
        out.print_json(json.dumps(summary))
        return summary
    lines = [f"[bold]{escape(path.name)}[/bold]  (PyTorch checkpoint, no sidecar: {escape(file_format)})",
             f"  tensors       {len(state_dict)}, {values / 1e6:.2f}M values (weights and buffers)",
             "  classes       " + (f"{found} (the out-channels of its last convolution)" if found > 1 else
                                   "not readable from its weights: give --num-classes"),
             f"  file          {summary['size_mb']} MB, sha256 {summary['sha256'][:16]}…",
             "  edgeseg needs --arch NAME to load it (a registered name, torchvision:NAME, smp:ARCH:ENCODER or "
             "file.py:function); then info shows its parameters and MACs, and export makes an ONNX of it"]
    for line in lines:
        out.print(line)
    return summary


_CACHE_HEADER = re.compile(r"TRT-(\d+)-([A-Za-z0-9]+)$")
_CACHE_SCALE = re.compile(r".+: [0-9a-fA-F]{8}$")
# the header's calibrator -> the TensorRT class that writes and reads caches headed so
CALIBRATOR_CLASSES = {"EntropyCalibration2": "IInt8EntropyCalibrator2", "EntropyCalibration": "IInt8EntropyCalibrator",
                      "MinMaxCalibration": "IInt8MinMaxCalibrator", "LegacyCalibration": "IInt8LegacyCalibrator"}


def tensorrt_version_of(code: int) -> str:
    """The version string of an NV_TENSORRT_VERSION: 8502 -> 8.5.2, 100300 -> 10.3.0.

    The inverse of ``edgeseg.quant.trt_cache.tensorrt_version_code``: major*1000 + minor*100
    + patch up to 8.x, major*10000 + minor*100 + patch from 10.0 on.
    """
    major = code // 10000 if code >= 10000 else code // 1000
    minor = (code // 100) % (100 if code >= 10000 else 10)
    return f"{major}.{minor}.{code % 100}"


def read_calibration_cache(path: Path) -> Optional[dict]:
    """The header and scale count of a TensorRT calibration cache (``TRT-<version>-<calibrator>`` then one
    ``tensor: <hex float32>`` line per tensor; see quant/trt_cache.py), or None when the file is no cache."""
    with open(path, "rb") as handle:
        first = handle.read(128).split(b"\n", 1)[0].strip().decode("ascii", "replace")
    header = _CACHE_HEADER.match(first)
    if header is None:
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]]
    code, calibrator = int(header.group(1)), header.group(2)
    return {"header": first, "calibrator": calibrator, "calibrator_class": CALIBRATOR_CLASSES.get(calibrator),
            "tensorrt_version": tensorrt_version_of(code), "version_code": code,
            "tensors": sum(1 for line in lines if _CACHE_SCALE.match(line)),
            "other_lines": sum(1 for line in lines if line and not _CACHE_SCALE.match(line))}


def _calibration_cache(path: Path, cache: dict, as_json: bool) -> dict:
    summary = dict(cache, artifact=path.name, kind="tensorrt calibration cache",
                   size_mb=round(path.stat().st_size / 1e6, 3), sha256=sha256_of(path))
    if as_json:
        out.print_json(json.dumps(summary))
        return summary
    reader = cache["calibrator_class"] or "no calibrator TensorRT names so"
    lines = [f"[bold]{escape(path.name)}[/bold]  (TensorRT calibration cache)",
             f"  header        {escape(cache['header'])}",
             f"  calibrator    {escape(cache['calibrator'])} (read by {reader})",
             f"  TensorRT      {cache['tensorrt_version']} (TensorRT ignores a cache headed for another version or "
             f"calibrator; build-engine re-heads it for the TensorRT it targets)",
             f"  tensors       {cache['tensors']} scales"
             + (f"; {cache['other_lines']} other lines that are not 'tensor: hex'" if cache["other_lines"] else ""),
             f"  file          {summary['size_mb']} MB, sha256 {summary['sha256'][:16]}…"]
    for line in lines:
        out.print(line)
    return summary
