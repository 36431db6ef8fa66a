"""ONNX files edgeseg did not make: what their graph says, completed by the user's model facts.

Every verb that takes an ONNX model reads its sidecar (input size, mean/std, classes).
A model exported by another tool has none, so this builds the same description from
the graph itself (input and output names, a static input size, the class count,
whether it already holds Q/DQ nodes) and from ``ModelFacts`` for the rest. The first
artifact edgeseg writes from it records the result in its own sidecar.

Deploy side: no torch, Python 3.8.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from edgeseg.errors import ConfigError, InputFileError, option
from edgeseg.spec import ModelFacts


def _dims(value_info) -> List[Optional[int]]:
    """Static dimensions as ints, symbolic or unknown ones as None."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _load(path: Path):
    """The ONNX graph at ``path`` without its external weights, or one sentence when it is no ONNX."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types for truncated or foreign files
        raise InputFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}); it may be truncated "
                             f"or another format, so re-export it.") from exc


def describe_onnx(path: str | Path, facts: Optional[ModelFacts] = None) -> Dict[str, Any]:
    """A sidecar-like description of the ONNX at ``path``: {"input", "dataset", "model", "precision", "onnx", "source"}.

    The input size comes from the graph when it is static, otherwise from ``facts.input_size``.

    >>> meta = describe_onnx("deeplab.onnx", ModelFacts(input_size=(520, 520)))  # doctest: +SKIP
    """
    import onnx

    facts = facts or ModelFacts()
    path = Path(path)
    model = _load(path)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(_dims(inputs[0])) != 4:
        raise InputFileError(f"{path} does not take one NCHW image batch (its inputs: "
                             f"{', '.join(i.name for i in inputs)}); edgeseg runs single-input segmentation models.")
    batch, channels, height, width = _dims(inputs[0])
    if channels not in (None, 3):
        raise InputFileError(f"{path} takes {channels}-channel images; edgeseg feeds RGB (3 channels).")
    if height is not None and width is not None:
        if facts.input_size and tuple(facts.input_size) != (height, width):
            given = option(f"--input-size {facts.input_size[0]}x{facts.input_size[1]}",
                           f"input_size={tuple(facts.input_size)}")
            raise ConfigError(f"{path} is fixed to {height}x{width} input but {given} was given; drop it or "
                              f"re-export the model at that size.")
        spec = facts.input_spec(height, width)
    else:
        spec = facts.input_spec()
        if spec is None:
            raise ConfigError(f"{path} has a dynamic input size and no sidecar saying which to use; give it with "
                              f"{option('--input-size HEIGHTxWIDTH', 'facts=ModelFacts(input_size=(H, W))')}.")
    output = graph.output[0]
    output_dims = _dims(output)
    # an integer output is a class map (NxHxW, or Nx1xHxW from ArgMax keepdims=1): it does not show the class count
    elem_type = output.type.tensor_type.elem_type  # 0: undefined, as some exporters leave it
    class_map = bool(elem_type) and onnx.helper.tensor_dtype_to_np_dtype(elem_type).kind in "iu"
    logits_dims = output_dims if len(output_dims) == 4 and not class_map else None
    read = logits_dims[1] if logits_dims else None
    if read is None and not facts.num_classes and not class_map:  # a dynamic graph often leaves it symbolic
        read = _classes_by_running(path, inputs[0].name, spec)
    num_classes = facts.num_classes or read or (facts.dataset.num_classes if facts.dataset else None)
    if num_classes is None:
        raise ConfigError(f"The class count of {path} cannot be read from its output; give "
                          f"{option('--num-classes', 'facts=ModelFacts(num_classes=N)')}.")
    if logits_dims and logits_dims[1] not in (None, num_classes):
        given = option(f"--num-classes {num_classes}", f"num_classes={num_classes}")
        raise ConfigError(f"{path} outputs {output_dims[1]} classes but {given} was given; drop it or check the "
                          f"model.")
    quantized = any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)
    info = facts.dataset_info(int(num_classes))
    return {
        "artifact": path.name,
        "kind": "onnx",
        "input": spec.to_dict(),
        "dataset": info.to_dict(),
        "model": {"arch": facts.arch or "onnx", "num_classes": int(num_classes)},
        "precision": "int8" if quantized else "fp32",
        "onnx": {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
                 "input": inputs[0].name, "output": output.name, "dynamic_batch": batch is None,
                 # what the runners and reports call the output (sidecar.model_output): a graph ending in ArgMax
                 # gives its class map
                 "output_kind": "class_map" if class_map else "logits",
                 "output_dtype": onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "float32"},
        "source": {"file": path.name, "format": f"ONNX from {model.producer_name or 'another tool'}",
                   "given": facts.to_dict()},
    }


def graph_summary(path: str | Path) -> Dict[str, Any]:
    """What any ONNX file says about itself, sidecar or not: producer, opset, inputs and outputs (symbolic dims
    by name), parameters, operators, Q/DQ, and what edgeseg's verbs will still need to be told.

    >>> graph_summary("model.onnx")["inputs"]  # doctest: +SKIP
    [{'name': 'input', 'dtype': 'float32', 'shape': ['batch', 3, 'height', 'width']}]
    """
    import collections

    import onnx

    from edgeseg.onnx_size import count_params

    path = Path(path)
    model = _load(path)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}

    def tensor(value_info) -> Dict[str, Any]:
        kind = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in kind.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name if kind.elem_type else "?"
        return {"name": value_info.name, "dtype": dtype, "shape": dims}

    inputs = [tensor(i) for i in graph.input if i.name not in initializers]
    outputs = [tensor(o) for o in graph.output]
    operators = collections.Counter(node.op_type for node in graph.node)
    cannot = _cannot_run(inputs, outputs)
    needs = []
    if not cannot and not all(isinstance(d, int) and d > 0 for d in inputs[0]["shape"][2:]):
        needs.append("--input-size HEIGHTxWIDTH (the input size is dynamic)")
    if not cannot:
        needs.append("--mean/--std if it was not trained on ImageNet's normalisation")
    return {
        "artifact": path.name, "kind": "onnx, no sidecar: made by another tool",
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p) or "unknown",
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": inputs, "outputs": outputs,
        "params": count_params(model),  # learned weights only, as edgeseg counts them (not shape constants)
        "nodes": len(graph.node), "operators": dict(operators.most_common()),
        "quantized": bool(operators.get("QuantizeLinear") or operators.get("DequantizeLinear")),
        "class_map_output": bool(outputs) and _is_class_map(outputs[0]),
        "external_data": any(i.data_location == onnx.TensorProto.EXTERNAL for i in graph.initializer),
        "verbs_need": needs,
        "cannot_run": cannot,
    }


def _is_class_map(output: Dict[str, Any]) -> bool:
    """What the runtime will make of the first output (runtime/outputs.py): integers, NxHxW or Nx1xHxW."""
    shape, integer = output["shape"], output["dtype"].startswith(("int", "uint"))
    return integer and (len(shape) == 3 or (len(shape) == 4 and shape[1] == 1))


def _cannot_run(inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> Optional[str]:
    """Why edgeseg cannot run a graph (the checks describe_onnx makes), in words; None when it can."""
    if len(inputs) != 1:
        return f"it takes {len(inputs)} inputs ({', '.join(i['name'] for i in inputs)}), not one image batch"
    if len(inputs[0]["shape"]) != 4:
        return f"its input has rank {len(inputs[0]['shape'])}, not NCHW"
    channels = inputs[0]["shape"][1]  # an int, or a str for a symbolic or unknown size
    if isinstance(channels, int) and channels != 3:
        return f"its input has {channels} channels in dimension 1 (edgeseg feeds NCHW RGB)"
    if not outputs:
        return "it has no outputs"
    return None


def _classes_by_running(path: Path, input_name: str, spec) -> Optional[int]:
    """The class dimension of the first output, from one inference on a blank image with ONNX Runtime."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {input_name: np.zeros((1, 3, spec.height, spec.width), dtype=np.float32)})[0]
    except Exception:  # the caller asks for --num-classes instead
        return None
    return int(out.shape[1]) if out.ndim == 4 else None


def adopt_onnx(path: str | Path, facts: Optional[ModelFacts]) -> Dict[str, Any]:
    """Write the sidecar an ONNX from another tool lacks, so verbs that need one (build-engine) can take it."""
    from edgeseg.sidecar import read_sidecar, sidecar_path, spec_from_sidecar, write_sidecar

    existing = read_sidecar(path)
    if existing:
        return existing
    meta = onnx_meta(path, existing, facts)
    spec, info = spec_from_sidecar(meta)
    from edgeseg.console import say

    say(f"Recording what is known about {Path(path).name} in {sidecar_path(path).name}, so later verbs need not be "
        f"told again")
    return write_sidecar(path, "onnx", input_spec=spec, dataset=info, stage="adopt", model=meta["model"],
                         precision=meta["precision"], onnx=meta["onnx"], source=meta["source"])


def onnx_meta(path: str | Path, sidecar: Dict[str, Any], facts: Optional[ModelFacts]) -> Dict[str, Any]:
    """The sidecar when edgeseg made ``path``, else the description built from its graph and ``facts``."""
    if sidecar:
        return sidecar
    meta = describe_onnx(path, facts)
    if not (facts and facts.mean and facts.std):
        from edgeseg.console import say

        say(f"{Path(path).name} has no sidecar: normalising with ImageNet's mean/std (the default; give --mean and "
            f"--std if the model was trained with others)")
    return meta
