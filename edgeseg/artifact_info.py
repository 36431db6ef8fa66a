"""``edgeseg info``: what an artifact is, from its sidecar, and whether the file still matches it."""
from __future__ import annotations

import json

from rich.markup import escape

from edgeseg.console import out
from edgeseg.errors import InputFileError
from edgeseg.fileio import require_file, sha256_of
from edgeseg.runtime.loader import ENGINE_SUFFIXES
from edgeseg.sidecar import model_output, read_sidecar


def info(artifact: str, as_json: bool = False) -> dict:
    """Print and return the sidecar of ``artifact``, with ``sha256_matches`` added.

    >>> edgeseg.info("pruned.int8.onnx")  # doctest: +SKIP
    """
    path = require_file(artifact, "Artifact")
    meta = read_sidecar(path)
    if not meta and path.suffix.lower() == ".onnx":
        return _foreign_onnx(path, as_json)
    if not meta:
        made_elsewhere = ("for an engine built elsewhere, bench it with --input-size and --trust-engine"
                          if path.suffix.lower() in ENGINE_SUFFIXES else
                          f"for a checkpoint made elsewhere: edgeseg export {path.name} --arch ...")
        raise InputFileError(f"{path} has no sidecar {path.name}.json; edgeseg describes the artifacts it made and any "
                             f"ONNX file ({made_elsewhere}).")
    meta = dict(meta, sha256_matches=meta.get("sha256") == sha256_of(path))
    if as_json:
        out.print_json(json.dumps(meta))
        return meta
    model = meta.get("model") or {}
    spec = meta.get("input") or {}
    data = meta.get("dataset") or {}
    lines = [
        f"[bold]{path.name}[/bold]  ({meta.get('kind')}, made by `{meta.get('stage', '?')}`)",
        f"  precision     {meta.get('precision', 'fp32')}",
        f"  architecture  {model.get('arch', '?')}  params {model.get('params', 0) / 1e6:.2f}M  "
        f"MACs {model.get('macs', 0) / 1e9:.3f}G",
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


def _foreign_onnx(path, as_json: bool) -> dict:
    """An ONNX another tool wrote: what its graph says, like `polygraphy inspect model`, and what verbs need."""
    from edgeseg.foreign_onnx import graph_summary

    summary = dict(graph_summary(path), size_mb=round(path.stat().st_size / 1e6, 3), sha256=sha256_of(path))
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
    lines += [f"  params        {summary['params'] / 1e6:.2f}M",
              f"  nodes         {summary['nodes']}: " + ", ".join(f"{op} {n}" for op, n in top)
              + (", ..." if len(summary["operators"]) > len(top) else ""),
              f"  precision     {'int8 (Q/DQ nodes)' if summary['quantized'] else 'float'}; output {output}",
              f"  size          {summary['size_mb']} MB, sha256 {summary['sha256'][:16]}…"
              + ("  (the .onnx file only: its weights are in external data files beside it)"
                 if summary["external_data"] else "")]
    if summary["cannot_run"]:
        lines.append(f"  [red]edgeseg cannot run it[/red]: {escape(summary['cannot_run'])}")
    else:
        lines.append("  edgeseg needs " + "; ".join(summary["verbs_need"]))
    for line in lines:
        out.print(line)
    return summary
