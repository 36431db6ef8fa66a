"""The argmax in the graph: a model that outputs its class map instead of float logits.

Logits are C times bigger than the class map (19 classes x 4 bytes a pixel at
1024x2048 is 159 MB a frame) and the host argmax over them is the slowest host step,
so ``export --argmax`` appends ``ArgMax(axis=1) -> Cast`` to the ONNX graph, as
MMDeploy's ``with_argmax`` and PaddleSeg's ``--output_op argmax`` do.

ONNX ArgMax gives int64; the Cast narrows it to uint8 (up to 255 classes: 255 stays
free as the usual ignore value) or int32. TensorRT >= 10 takes uint8 network outputs;
TensorRT 8.5's parser turns ArgMax into TopK, whose indices are int32, so models meant
for JetPack 5 engines are exported with ``--argmax-dtype int32``.

Only onnx is needed here (no torch): calibrate uses ``strip_class_map`` and
``append_class_map`` to quantise the logits and put the same tail back in float.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeseg.errors import ConfigError

CLASS_MAP_OUTPUT = "classes"
DTYPES = ("uint8", "int32")
_ARGMAX_INT64 = "classes_int64"


def default_dtype(num_classes: int) -> str:
    return "uint8" if num_classes <= 255 else "int32"


def check_dtype(dtype: str, num_classes: int) -> str:
    if dtype not in DTYPES:
        raise ConfigError(f"--argmax-dtype {dtype} is not one of {', '.join(DTYPES)}; use uint8 (TensorRT >= 10, "
                          f"ONNX Runtime) or int32 (TensorRT 8.5).")
    if dtype == "uint8" and num_classes > 255:
        raise ConfigError(f"The model has {num_classes} classes, too many for a uint8 class map (255 at most); "
                          f"use --argmax-dtype int32.")
    return dtype


def append_class_map(model, dtype: str):
    """Replace the logits output of ``model`` (an onnx ModelProto, changed in place) by its NxHxW class map."""
    import onnx
    from onnx import TensorProto, helper

    if len(model.graph.output) != 1:
        raise ConfigError(f"The model has {len(model.graph.output)} outputs; --argmax needs exactly one (the logits).")
    logits = model.graph.output[0]
    dims = [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim]
    if len(dims) != 4 or logits.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ConfigError(f"The model's output {logits.name} is not NxCxHxW float logits (it is {dims}); "
                          f"export the logits model with --argmax, not a model that has it already.")
    to = {"uint8": TensorProto.UINT8, "int32": TensorProto.INT32}[dtype]
    model.graph.node.extend([
        helper.make_node("ArgMax", [logits.name], [_ARGMAX_INT64], name="class_map_argmax", axis=1, keepdims=0),
        helper.make_node("Cast", [_ARGMAX_INT64], [CLASS_MAP_OUTPUT], name="class_map_cast", to=to),
    ])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(CLASS_MAP_OUTPUT, to, [dims[0], dims[2], dims[3]]))
    onnx.checker.check_model(model)
    return model


def class_map_tail(model) -> Optional[str]:
    """The dtype of ``model``'s class-map tail (``"uint8"`` / ``"int32"``), or None for a logits model."""
    producers = {out: node for node in model.graph.node for out in node.output}
    cast = producers.get(model.graph.output[0].name) if len(model.graph.output) == 1 else None
    if cast is None or cast.op_type != "Cast" or producers.get(cast.input[0]) is None:
        return None
    if producers[cast.input[0]].op_type != "ArgMax":
        return None
    from onnx import TensorProto

    return {TensorProto.UINT8: "uint8", TensorProto.INT32: "int32"}.get(cast.attribute[0].i)


def strip_class_map(model):
    """The logits model under a class-map model (an onnx ModelProto, changed in place)."""
    from onnx import TensorProto, helper, shape_inference

    producers = {out: node for node in model.graph.node for out in node.output}
    cast = producers[model.graph.output[0].name]
    argmax = producers[cast.input[0]]
    logits = argmax.input[0]
    inferred = shape_inference.infer_shapes(model)
    info = next((v for v in inferred.graph.value_info if v.name == logits), None)
    dims = ([d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim] if info is not None
            else ["batch", None, None, None])
    model.graph.node.remove(cast)
    model.graph.node.remove(argmax)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, dims))
    return model


def add_class_map_file(path: str | Path, dtype: str) -> None:
    """Append the class-map tail to the ONNX file at ``path`` (rewritten in place: callers pass a temporary file)."""
    import onnx

    model = onnx.load(str(path))
    onnx.save(append_class_map(model, dtype), str(path))
