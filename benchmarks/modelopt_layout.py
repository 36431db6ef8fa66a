"""Q/DQ layout: edgeseg calibrate against NVIDIA ModelOpt's ONNX PTQ, read from the two ONNX files alone.

Why: edgeseg's Q/DQ model is meant for TensorRT's explicit quantization, and ModelOpt
(``modelopt.onnx.quantization.quantize``) is NVIDIA's own tool for writing exactly that. Where
the two place Q/DQ differently, either edgeseg has a reason or edgeseg should change.

For each graph, from the ONNX alone: per op type, how many nodes read a DequantizeLinear on
their activation input(s), on their weight, and whose output feeds a QuantizeLinear; the
nodes left in float; the weight form (stored INT8 or float through Q, per-channel axis and
scale length, zero points); the bias form (float initializer or INT32 through DQ); the
activation scales (per-tensor, zero point 0, INT8); Q/DQ counts and opset. Then, for the
nodes of both graphs (matched by name, else by output tensor, else by the tensors they
read), every input or output that gets Q/DQ in one and not the other, grouped with a
reason. Optionally: CamVid val mIoU and argmax agreement with FP32 on ONNX Runtime's CPU
provider, and edgeseg's TensorRT rules check on both files.

ModelOpt lives in a separate environment (it pulls in torch, cupy and onnxruntime-gpu):
give its file with --modelopt, or let this script write it, in this interpreter when
``modelopt`` imports here or through --modelopt-python, on the same calibration images as
edgeseg's (the files listed in edgeseg's <model>.ranges.json, pre-processed by edgeseg
from the FP32 sidecar).

Run: ../.venv/bin/python modelopt_layout.py --edgeseg /tmp/cmp/pruned.int8.onnx \
        --modelopt-python /tmp/mo/bin/python [--modelopt FILE] [--val-images 101]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FP32 = ROOT / "models" / "camvid" / "pruned.onnx"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED = ("Conv", "ConvTranspose", "Gemm")  # input 0 activation, 1 weight, 2 bias
ACTIVATIONS = ("Relu", "HardSwish", "HardSigmoid", "Sigmoid", "Clip", "LeakyRelu", "Tanh")
SHAPE_ONLY = ("Shape", "Slice", "Gather", "Unsqueeze", "Squeeze", "Reshape", "ConstantOfShape", "Constant")


# ---------------------------------------------------------------- producing ModelOpt's file

def quantize_with_modelopt(fp32: str, npy: str, out: str, method: str, cache: str = "") -> dict:
    """Run ModelOpt's ONNX INT8 PTQ on the CPU (needs only numpy + modelopt here); returns the options used."""
    import modelopt
    import onnx
    import onnxruntime
    from modelopt.onnx.quantization import quantize

    options = {"quantize_mode": "int8", "calibration_method": method, "calibration_eps": ["cpu"],
               "high_precision_dtype": "fp32"}
    if cache:
        options["calibration_cache_path"] = cache
    started = time.time()
    quantize(fp32, calibration_data=np.load(npy), output_path=out, **options)
    return {"modelopt_version": modelopt.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "options": options, "calibration_images": int(np.load(npy).shape[0]),
            "seconds": round(time.time() - started, 1)}


def calibration_npy(edgeseg_model: Path, fp32: Path, npy: Path, data: Path) -> dict:
    """The images edgeseg calibrated on (its ranges.json), pre-processed as edgeseg does, as one NCHW array."""
    from edgeseg.data.images import read_image
    from edgeseg.quant.api import calibration_images
    from edgeseg.runtime.preprocess import preprocess
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar

    spec, _ = spec_from_sidecar(read_sidecar(fp32))
    stem = edgeseg_model.name[: -len(".int8.onnx")] if edgeseg_model.name.endswith(".int8.onnx") else edgeseg_model.stem
    ranges = edgeseg_model.with_name(f"{stem}.ranges.json")
    if ranges.exists():
        recorded = json.loads(ranges.read_text())
        files = [Path(recorded["images"]) / name for name in recorded["image_files"]]
        source = f"{ranges.name}: the {len(files)} images edgeseg calibrated on"
    else:
        files = calibration_images(data / "train" / "images", 64, seed=0)
        source = f"no {ranges.name}: 64 CamVid train images, seed 0"
    batch = np.concatenate([preprocess(read_image(f), spec) for f in files])
    np.save(npy, batch)
    return {"source": source, "shape": list(batch.shape), "input": {"height": spec.height, "width": spec.width,
                                                                   "mean": list(spec.mean), "std": list(spec.std)}}


def produce_modelopt(args, edgeseg_model: Path, work: Path) -> dict:
    """Write ModelOpt's file(s) into ``work``: with its own calibration, and optionally with edgeseg's cache."""
    work.mkdir(parents=True, exist_ok=True)
    npy = work / "calibration.npy"
    calibration = calibration_npy(edgeseg_model, Path(args.fp32), npy, Path(args.data))
    runs = {"modelopt": ("", work / f"modelopt-{args.modelopt_method}.onnx")}
    cache = edgeseg_model.with_name(edgeseg_model.name.replace(".int8.onnx", ".calib.cache"))
    if args.with_edgeseg_cache and cache.exists():
        runs["modelopt-edgeseg-cache"] = (str(cache), work / "modelopt-edgeseg-cache.onnx")
    made = {}
    for key, (cache_path, out) in runs.items():
        if args.modelopt_python:
            code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import modelopt_layout as m; "
                    "print('RESULT ' + json.dumps(m.quantize_with_modelopt(*sys.argv[2:]))); sys.stdout.flush()")
            log = out.with_suffix(".log")
            with open(log, "w") as handle:
                done = subprocess.run([args.modelopt_python, "-c", code, str(Path(__file__).parent), args.fp32,
                                       str(npy), str(out), args.modelopt_method, cache_path],
                                      stdout=subprocess.PIPE, stderr=handle, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"ModelOpt failed ({args.modelopt_python}); see {log}")
            made[key] = dict(json.loads(lines[-1][len("RESULT "):]), path=str(out), log=str(log))
        else:
            made[key] = dict(quantize_with_modelopt(args.fp32, str(npy), str(out), args.modelopt_method, cache_path),
                             path=str(out))
        out.with_suffix(".json").write_text(json.dumps(made[key], indent=2) + "\n")  # read back by --modelopt FILE
    return {"calibration": calibration, "runs": made}


# ---------------------------------------------------------------- reading a Q/DQ graph

class Graph:
    """One ONNX graph with the maps the layout questions need."""

    def __init__(self, path: Path):
        import onnx
        from onnx import numpy_helper

        self.model = onnx.load(str(path))
        graph = self.model.graph
        self.values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.values[node.output[0]] = numpy_helper.to_array(attr.t)
        self.nodes = list(graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers = defaultdict(list)
        for node in self.nodes:
            for tensor in node.input:
                self.consumers[tensor].append(node)
        self.graph_inputs = {value.name for value in graph.input}

    def attr(self, node, name, default=None):
        for attr in node.attribute:
            if attr.name == name:
                import onnx

                return onnx.helper.get_attribute_value(attr)
        return default

    def resolve(self, tensor: str) -> dict:
        """What a node input really is: the float tensor behind a DequantizeLinear (and its Q), or itself."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return {"origin": tensor, "dq": None, "q": None, "stored": None}
        stored = dq.input[0]
        q = self.producer.get(stored)
        if q is not None and q.op_type == "QuantizeLinear":
            return {"origin": q.input[0], "dq": dq, "q": q, "stored": "float"}
        return {"origin": stored, "dq": dq, "q": None, "stored": str(self.values[stored].dtype) if stored in self.values
                else "computed"}

    def constant(self, tensor: str) -> bool:
        return tensor in self.values

    def role(self, node, slot: int, origin: str) -> str:
        if node.op_type in WEIGHTED:
            return ("activation", "weight", "bias")[slot]
        if node.op_type == "Resize" and slot > 0:
            return "shape"
        if node.op_type in ("Slice", "Reshape", "Pad") and slot > 0:
            return "shape"
        return "constant" if self.constant(origin) else "activation"


def zero_point(graph: Graph, node) -> tuple:
    """(dtype, all zero) of a Q/DQ node's zero point (absent: uint8 by ONNX's default, zero)."""
    if len(node.input) > 2 and node.input[2]:
        value = graph.values.get(node.input[2])
        if value is None:
            return "computed", None
        return str(value.dtype), bool(np.all(value == 0))
    output_dtype = graph.attr(node, "output_dtype")
    return ("uint8" if not output_dtype else f"onnx:{output_dtype}"), True


def layout(path: Path) -> dict:
    """Everything this benchmark measures about one Q/DQ ONNX file, as plain data."""
    g = Graph(path)
    ops = Counter(node.op_type for node in g.nodes)
    records = {}
    for node in g.nodes:
        if node.op_type in QDQ_OPS or node.op_type == "Constant":
            continue
        inputs = []
        for slot, tensor in enumerate(node.input):
            if not tensor:
                continue
            found = g.resolve(tensor)
            inputs.append({"slot": slot, "role": g.role(node, slot, found["origin"]), "tensor": found["origin"],
                           "dq": found["dq"] is not None, "stored": found["stored"]})
        output_q = any(consumer.op_type == "QuantizeLinear" for out in node.output for consumer in g.consumers[out])
        records[node.name] = {"op": node.op_type, "inputs": inputs, "outputs": list(node.output), "output_q": output_q}

    per_op = {}
    for name, rec in records.items():
        row = per_op.setdefault(rec["op"], {"nodes": 0, "all_activation_inputs_dq": 0, "some_activation_inputs_dq": 0,
                                            "weight_dq": 0, "bias_dq": 0, "output_feeds_q": 0, "float": 0})
        row["nodes"] += 1
        acts = [i for i in rec["inputs"] if i["role"] == "activation"]
        quantized = [i for i in acts if i["dq"]]
        if acts and len(quantized) == len(acts):
            row["all_activation_inputs_dq"] += 1
        elif quantized:
            row["some_activation_inputs_dq"] += 1
        row["weight_dq"] += any(i["dq"] for i in rec["inputs"] if i["role"] == "weight")
        row["bias_dq"] += any(i["dq"] for i in rec["inputs"] if i["role"] == "bias")
        row["output_feeds_q"] += rec["output_q"]
        row["float"] += not any(i["dq"] for i in rec["inputs"])
    float_nodes = {name: rec["op"] for name, rec in records.items()
                   if not any(i["dq"] for i in rec["inputs"]) and rec["op"] not in SHAPE_ONLY}

    # weights, biases and activations, seen from each DequantizeLinear
    weights, activations = Counter(), Counter()
    weight_notes, activation_scales = [], {}
    for node in g.nodes:
        if node.op_type != "DequantizeLinear":
            continue
        found = g.resolve(node.output[0])
        readers = g.consumers[node.output[0]]
        roles = {g.role(reader, list(reader.input).index(node.output[0]), found["origin"]) for reader in readers}
        scale = g.values.get(node.input[1])
        zp_dtype, zp_zero = zero_point(g, found["q"] or node)
        axis = g.attr(node, "axis", 1)
        if "weight" in roles or "bias" in roles or "constant" in roles:
            kind = "bias" if roles == {"bias"} else ("weight" if "weight" in roles else "constant")
            origin = g.values.get(found["origin"])
            per_channel = scale is not None and scale.size > 1
            stored = f"{zp_dtype} via QuantizeLinear of a float initializer" if found["stored"] == "float" else (
                f"{found['stored']} initializer")
            key = (kind, stored, f"per-channel axis {axis}" if per_channel else "per-tensor",
                   "zero points 0" if zp_zero else "zero points NOT 0")
            weights[", ".join(key)] += 1
            if per_channel and origin is not None and origin.shape[axis] != scale.size:
                weight_notes.append(f"{found['origin']}: {scale.size} scales for {origin.shape[axis]} channels")
        else:
            per_tensor = scale is not None and scale.size == 1
            key = ("per-tensor" if per_tensor else "per-channel", zp_dtype,
                   "zero point 0" if zp_zero else "zero point NOT 0")
            activations[", ".join(key)] += 1
            if per_tensor:
                activation_scales[found["origin"]] = float(scale.reshape(-1)[0])

    biases = Counter()
    for rec in records.values():
        for i in rec["inputs"]:
            if i["role"] == "bias":
                biases[f"{i['stored']} through DequantizeLinear" if i["dq"] else "float initializer"] += 1
    return {"file": str(path), "size_mb": round(path.stat().st_size / 2 ** 20, 3),
            "opset": {imp.domain or "ai.onnx": imp.version for imp in g.model.opset_import},
            "quantize_linear": ops.get("QuantizeLinear", 0), "dequantize_linear": ops.get("DequantizeLinear", 0),
            "nodes": len(g.nodes), "op_types": dict(sorted(ops.items())), "per_op": dict(sorted(per_op.items())),
            "float_nodes": float_nodes, "weights": dict(weights), "weight_problems": weight_notes,
            "biases": dict(biases), "activations": dict(activations),
            "_records": records, "_activation_scales": activation_scales}


# ---------------------------------------------------------------- comparing two layouts

def match(a: dict, b: dict) -> dict:
    """{name in a: name in b}: by node name, else by first output tensor, else by op type + tensors read."""
    ra, rb = a["_records"], b["_records"]
    pairs = {name: name for name in ra if name in rb and ra[name]["op"] == rb[name]["op"]}
    by_output = {rec["outputs"][0]: name for name, rec in rb.items() if rec["outputs"]}
    taken = set(pairs.values())

    def reads(rec):
        return (rec["op"], tuple(i["tensor"] for i in rec["inputs"] if i["role"] == "activation"))
    by_reads = {reads(rec): name for name, rec in rb.items()}
    how = Counter(name=len(pairs))
    for name, rec in ra.items():
        if name in pairs:
            continue
        other = by_output.get(rec["outputs"][0]) if rec["outputs"] else None
        if other is None or other in taken or rb[other]["op"] != rec["op"]:
            other, kind = by_reads.get(reads(rec)), "reads"
        else:
            kind = "output"
        if other is not None and other not in taken:
            pairs[name] = other
            taken.add(other)
            how[kind] += 1
    return {"pairs": pairs, "matched_by": dict(how), "only_in_first": sorted(set(ra) - set(pairs)),
            "only_in_second": sorted(set(rb) - taken)}


def differences(a: dict, b: dict, pairs: dict) -> list:
    """Each input slot / output whose Q/DQ differs between matched nodes: (node, op, where, role, tensor, a, b)."""
    out = []
    for name_a, name_b in pairs.items():
        ra, rb = a["_records"][name_a], b["_records"][name_b]
        slots_b = {i["slot"]: i for i in rb["inputs"]}
        for i in ra["inputs"]:
            j = slots_b.get(i["slot"])
            if j is None or i["role"] in ("shape", "constant") and not (i["dq"] or j["dq"]):
                continue
            if i["dq"] != j["dq"]:
                out.append({"node": name_a, "op": ra["op"], "where": f"input {i['slot']}", "role": i["role"],
                            "tensor": i["tensor"], "edgeseg": i["dq"], "modelopt": j["dq"]})
        if ra["output_q"] != rb["output_q"]:
            out.append({"node": name_a, "op": ra["op"], "where": "output", "role": "output",
                        "tensor": ra["outputs"][0], "edgeseg": ra["output_q"], "modelopt": rb["output_q"]})
    return out


def scale_ratios(a: dict, b: dict) -> dict:
    """ModelOpt's activation scale / edgeseg's, on tensors both quantise."""
    sa, sb = a["_activation_scales"], b["_activation_scales"]
    shared = sorted(set(sa) & set(sb))
    if not shared:
        return {"tensors": 0}
    ratio = np.array([sb[t] / sa[t] for t in shared])
    return {"tensors": len(shared), "median": round(float(np.median(ratio)), 4),
            "p5": round(float(np.percentile(ratio, 5)), 4), "p95": round(float(np.percentile(ratio, 95)), 4),
            "within_10_percent": int(np.sum(np.abs(ratio - 1) <= 0.1)),
            "input_tensor": {t: round(float(sb[t] / sa[t]), 4) for t in shared if t == "input"}}


def edgeseg_with_modelopt_adds(edgeseg_model: Path, diffs: list, out: Path) -> list:
    """edgeseg's file with the Add inputs ModelOpt leaves unquantised read straight from the float tensor.

    Isolates ModelOpt's residual-Add rule (Q/DQ on the skip input only, so TensorRT can fuse
    the Add into the preceding conv) on edgeseg's own scales. Returns the rewired Add inputs.
    """
    import onnx

    g = Graph(edgeseg_model)
    targets = {(d["node"], int(d["where"].split()[1])) for d in diffs
               if d["op"] == "Add" and d["role"] == "activation" and d["edgeseg"] and not d["modelopt"]}
    rewired = []
    for node in g.nodes:
        for slot, tensor in enumerate(node.input):
            if (node.name, slot) in targets:
                found = g.resolve(tensor)
                node.input[slot] = found["origin"]
                rewired.append(f"{node.name} input {slot}: {found['origin']}")
    onnx.save(g.model, str(out))  # Q/DQ left without a reader are harmless; ONNX Runtime drops them
    return rewired


def same_placement(a: dict, b: dict) -> bool:
    found = match(a, b)
    return not differences(a, b, found["pairs"]) and not found["only_in_first"] and not found["only_in_second"]


# Why each kind of difference exists, written after reading both tools' code (onnxruntime's QDQQuantizer,
# modelopt/onnx/quantization/{int8,graph_utils,partitioning,ort_utils}.py of ModelOpt 0.47.0).
# {group: (title, verdict, why)}; CATEGORY_GROUP maps "op / slot / who quantises" to a group.
REASONS = {
    "residual-add": (
        "Residual Adds: Q/DQ on the skip input only", "**edgeseg should change**",
        "ModelOpt leaves the conv branch of each residual Add unquantised and keeps Q/DQ on the skip input only "
        "(graph_utils.build_non_residual_input_map, remove_partial_input_qdq), so that TensorRT fuses the Add into "
        "the projecting conv as its epilogue, reading the skip tensor in INT8. edgeseg quantises both inputs (ONNX "
        "Runtime's QDQQuantizer treats Add as an ordinary quantised op): the conv output is rounded once more, and a "
        "Q/DQ pair between a conv and its Add is the case TensorRT's Developer Guide shows as a suboptimal "
        "fusion (Q/DQ placement recommendations: the extra pair 'forces the separation of the convolution "
        "operator from the element-wise addition operator'). The rewired row under Accuracy (edgeseg's own file "
        "with those 10 Add inputs read in float) loses nothing on ONNX Runtime; the speed gain still needs a "
        "TensorRT device to confirm."),
    "small-conv": (
        "Convs narrower than 16 channels", "edgeseg could change (a speed rule; confirm on TensorRT)",
        "`backbone.1 block.1.0` is an 8->8 1x1 conv after pruning. ModelOpt skips a conv whose input and output "
        "channels are both < 16 unless it reads the graph input (graph_utils.find_nodes_from_convs_to_exclude): "
        "TensorRT's INT8 conv kernels gain nothing at that width. edgeseg quantises every conv. Adopting the rule "
        "changes no accuracy worth measuring (one tiny conv); the Relu in front of it then loses its Q as well."),
    "logits": (
        "The logits head", "keep (edgeseg's design)",
        "edgeseg keeps the logits tail in float on purpose (qdq.logits_nodes: the classifier convs and the Add that "
        "form the logits decide the argmax). ModelOpt has no such rule: it quantises both classifier convs' weights, "
        "the low classifier's input to the logits Add (the high classifier's output joins as the fused residual) "
        "and, through the INT8 Resize, the high classifier's input. Two 1x1 convs with 11 outputs: little speed to "
        "win (not measured)."),
    "hardswish": (
        "HardSwish inputs", "undecided: needs a TensorRT profile",
        "ModelOpt registers HardSwish as a quantisable op (ort_utils.configure_ort, commented 'Example: "
        "mobilenet_v3_opset17') and, since its conv partitions do not absorb HardSwish (not among its fusible "
        "unary ops), puts Q/DQ on HardSwish's input: the conv writes INT8 and HardSwish runs INT8 in, INT8 out. "
        "edgeseg leaves HardSwish in float after the conv and quantises its output where the next conv reads it. "
        "ModelOpt's way rounds each of the 20 pre-activations once more; the 'edgeseg's cache scales' row under "
        "Accuracy (ModelOpt's whole placement on edgeseg's scales, without bias correction) shows what that costs on "
        "ONNX Runtime. Whether TensorRT runs Conv+HardSwish faster this way is not known here. (The 21st conv output, "
        "`low_classifier`'s, is the logits Add's quantised input: see the logits head.)"),
    "resize": (
        "Resize after a conv", "keep here; a candidate for decoder models",
        "ModelOpt quantises a Resize that reads the output of a conv partition (partitioning."
        "_find_quantizable_kgen_partitions: Resize/Upsample 'prefer quantized input'), so the SE-scaled high "
        "features (`/net/classifier/Mul`) are upsampled in INT8. edgeseg has no Resize in QUANTIZED_OPS; here the "
        "Resize only feeds the float classifier, so nothing is lost. For decoders whose upsampling feeds a quantised "
        "conv (U-Net, DeepLab) adding Resize to QUANTIZED_OPS, as ModelOpt does, is worth a TensorRT check."),
    "shared-dq": (
        "Shape reading a DequantizeLinear", "no effect",
        "ONNX Runtime's quantizer gives a tensor one DequantizeLinear shared by all its readers; this Shape reads "
        "the tensor the INT8 Resize reads and looks only at its dimensions."),
}
CATEGORY_GROUP = {
    "Add / activation / edgeseg only": "residual-add",
    "Conv / output / edgeseg only": "residual-add",  # the convs feeding those Adds (and the small conv, below)
    "Conv / activation / edgeseg only": "small-conv",
    "Conv / weight / edgeseg only": "small-conv",
    "Relu / output / edgeseg only": "small-conv",
    "Add / activation / ModelOpt only": "logits",
    "Conv / activation / ModelOpt only": "logits",
    "Conv / weight / ModelOpt only": "logits",
    "HardSwish / activation / ModelOpt only": "hardswish",
    "Conv / output / ModelOpt only": "hardswish",  # 20 convs feed a HardSwish; low_classifier feeds the logits Add
    "Resize / activation / ModelOpt only": "resize",
    "Resize / output / ModelOpt only": "resize",
    "Mul / output / ModelOpt only": "resize",
    "Shape / activation / ModelOpt only": "shared-dq",
}


def categories(diffs: list) -> list:
    groups = defaultdict(list)
    for d in diffs:
        who = "edgeseg only" if d["edgeseg"] else "ModelOpt only"
        groups[f"{d['op']} / {d['role']} / {who}"].append(d["node"])
    return [{"category": key, "count": len(nodes), "nodes": sorted(set(nodes)),
             "group": CATEGORY_GROUP.get(key, "unexplained")} for key, nodes in sorted(groups.items())]


# ---------------------------------------------------------------- accuracy and TensorRT rules

def accuracy(models: dict, fp32: Path, data: Path, count: int) -> dict:
    """CamVid val mIoU (native label size) and argmax agreement with FP32 (model size), ONNX Runtime CPU."""
    import onnxruntime as ort

    from edgeseg.metrics import mean_iou
    from edgeseg.quant.sensitivity import load_eval_set
    from edgeseg.runtime import native
    from edgeseg.runtime.preprocess import resize_label
    from edgeseg.sidecar import read_sidecar, spec_from_sidecar

    spec, _ = spec_from_sidecar(read_sidecar(fp32))
    evalset = load_eval_set(str(data), spec, count)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the machine is shared: one core
    results, reference = {}, None
    for label, path in {"FP32": fp32, **models}.items():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        classes = evalset.info.num_classes
        confusion = np.zeros((classes, classes), dtype=np.int64)
        maps = []
        for batch, lab in zip(evalset.batches, evalset.labels):
            pred = native.argmax(session.run(None, {name: batch})[0])[0]
            maps.append(pred)
            native.accumulate_confusion(confusion, resize_label(pred, *lab.shape[:2]), lab, evalset.info.ignore_index)
        reference = reference if reference is not None else maps
        agree = sum(int((m == r).sum()) for m, r in zip(maps, reference)) / sum(r.size for r in reference)
        results[label] = {"miou": round(mean_iou(confusion), 4), "argmax_agreement_percent": round(100 * agree, 3)}
    return {"val_images": len(evalset.batches), "rows": results}


def trt_rules(models: dict) -> dict:
    try:
        from edgeseg.engine.trt_rules import ALL_TARGETS, check_for_tensorrt
    except ImportError as error:
        return {"skipped": f"edgeseg.engine.trt_rules not importable: {error}"}
    return {label: {target: check_for_tensorrt(str(path), target) for target in ALL_TARGETS}
            for label, path in models.items()}


# ---------------------------------------------------------------- report

def short(name: str) -> str:
    """A node name without the export's repeated path.

    /net/backbone/backbone.3/block/block.2/block.2.0/Conv -> backbone.3/block.2.0/Conv
    """
    parts = [p for p in name.split("/") if p and p not in ("net", "block", "backbone")]
    kept = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return "/".join(kept)


def plain(mapping: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in mapping.items())


def render(doc: dict) -> str:
    e, m = doc["layouts"]["edgeseg"], doc["layouts"]["modelopt"]
    made = doc.get("modelopt_run") or {}
    options = ", ".join(f"{k}={v!r}" for k, v in made.get("options", {}).items())
    lines = ["# Q/DQ layout: edgeseg calibrate vs NVIDIA ModelOpt ONNX PTQ", "",
             f"Model: `{doc['fp32']}` ({doc['input']}), run {doc['date']}. edgeseg: `{doc['edgeseg_settings']}`. "
             f"ModelOpt: {made.get('modelopt_version', '?')}, `quantize({options})` "
             f"on {made.get('calibration_images', '?')} images ({doc.get('calibration', {}).get('source', '')}). "
             "Produced by `benchmarks/modelopt_layout.py`; every number is in `modelopt-layout.json`.", "",
             "## Whole graph", "",
             "| | edgeseg | ModelOpt |", "|---|---|---|",
             f"| opset | {plain(e['opset'])} | {plain(m['opset'])} |",
             f"| QuantizeLinear / DequantizeLinear | {e['quantize_linear']} / {e['dequantize_linear']} | "
             f"{m['quantize_linear']} / {m['dequantize_linear']} |",
             f"| nodes / file MB | {e['nodes']} / {e['size_mb']} | {m['nodes']} / {m['size_mb']} |",
             f"| weight DQs | {plain(e['weights'])} | {plain(m['weights'])} |",
             f"| conv biases | {plain(e['biases'])} | {plain(m['biases'])} |",
             f"| activation DQs | {plain(e['activations'])} | {plain(m['activations'])} |",
             f"| weight scale problems | {len(e['weight_problems'])} | {len(m['weight_problems'])} |", "",
             "## Per op type (nodes: all activation inputs DQ / weight DQ / output feeds a Q / no DQ at all)", "",
             "| op | nodes | edgeseg | ModelOpt |", "|---|---:|---|---|"]
    for op in sorted(set(e["per_op"]) | set(m["per_op"])):
        a, b = e["per_op"].get(op, {}), m["per_op"].get(op, {})

        def cell(r):
            if not r:
                return "-"
            some = f" (+{r['some_activation_inputs_dq']} some)" if r["some_activation_inputs_dq"] else ""
            return f"{r['all_activation_inputs_dq']}{some} / {r['weight_dq']} / {r['output_feeds_q']} / {r['float']}"
        lines.append(f"| {op} | {a.get('nodes', b.get('nodes'))} | {cell(a)} | {cell(b)} |")
    lines += ["", "Output feeds a Q: the next op's input is quantised (both write Q/DQ on op inputs only; "
              "neither sets output quantisation).", "",
              "Left in float (no DQ on any input; shape plumbing left out; activations named only by count):", ""]
    for label, lay in (("edgeseg", e), ("ModelOpt", m)):
        kinds = Counter(lay["float_nodes"].values())
        named = [f"`{short(n)}`" for n, op in lay["float_nodes"].items() if op not in ACTIVATIONS]
        lines.append(f"- {label}: {', '.join(f'{op} {c}' for op, c in sorted(kinds.items()))}; "
                     f"{', '.join(named) or 'no compute op'}")
    lines.append("")
    cmp = doc["comparison"]
    lines += ["## Placement differences", "",
              f"{cmp['matched']} nodes matched ({plain(cmp['matched_by'])}); "
              f"only in edgeseg: {cmp['only_in_edgeseg'] or 'none'}; "
              f"only in ModelOpt: {cmp['only_in_modelopt'] or 'none'}. {cmp['same_placement']} matched nodes have "
              f"the same Q/DQ on every input and output; {len(cmp['differences'])} slot differences in "
              f"{len({d['node'] for d in cmp['differences']})} nodes, grouped by reason (node names shortened here, "
              "full in the JSON):", "",
              "| reason | verdict | differences (op / slot / who quantises: count) |", "|---|---|---|"]
    by_group = defaultdict(list)
    for c in cmp["categories"]:
        by_group[c["group"]].append(c)
    for group, cats in by_group.items():
        title, verdict, _ = REASONS.get(group, ("unexplained", "?", ""))
        counts = "; ".join(f"{c['category']}: {c['count']}" for c in cats)
        lines.append(f"| {title} | {verdict} | {counts} |")
    for group, cats in by_group.items():
        title, verdict, why = REASONS.get(group, ("unexplained", "?", "no reason written yet"))
        lines += ["", f"### {title}: {verdict}", "", why, ""]
        lines += [f"- {c['category']} ({c['count']}): {', '.join(f'`{short(n)}`' for n in c['nodes'])}" for c in cats]
    r = cmp["activation_scale_ratio"]
    if r.get("tensors"):
        lines += ["", f"Activation scales on the {r['tensors']} tensors both quantise, ModelOpt / edgeseg: median "
                  f"{r['median']}, 5th-95th percentile {r['p5']}-{r['p95']}, {r['within_10_percent']} within 10% "
                  "(edgeseg's selected method vs ModelOpt's entropy: calibration, not layout)."]
    acc = doc.get("accuracy")
    if acc and "rows" in acc:
        lines += ["", f"## Accuracy (CamVid val, {acc['val_images']} images, ONNX Runtime CPU)", "",
                  "| model | mIoU | argmax agreement with FP32 % |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['miou']} | {v['argmax_agreement_percent']} |" for k, v in acc["rows"].items()]
    rules = doc.get("trt_rules")
    if rules and "skipped" not in rules:
        targets = list(next(iter(rules.values())))
        lines += ["", "## edgeseg's TensorRT rules check", "", "| file | " + " | ".join(targets) + " |",
                  "|---|" + "---|" * len(targets)]
        for label, per in rules.items():
            lines.append(f"| {label} | " + " | ".join("passes" if not v else f"{len(v)}: {v[0][:120]}"
                                                     for v in per.values()) + " |")
    if doc.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import add_camvid_argument, machine, write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fp32", default=str(FP32), help="The FP32 ONNX both tools quantise.")
    parser.add_argument("--edgeseg", required=True, help="edgeseg calibrate's Q/DQ ONNX of --fp32 (re-written "
                        "with the current code; its .ranges.json next to it names the calibration images).")
    parser.add_argument("--modelopt", help="ModelOpt's Q/DQ ONNX of --fp32; written here when omitted.")
    parser.add_argument("--modelopt-python", help="Interpreter of a venv with nvidia-modelopt[onnx], when this one "
                        "has none.")
    parser.add_argument("--modelopt-method", default="entropy", choices=("entropy", "max"))
    parser.add_argument("--with-edgeseg-cache", action="store_true",
                        help="Also write ModelOpt's layout with edgeseg's TensorRT calibration cache as its scales.")
    parser.add_argument("--work", default="/tmp/modelopt-layout", help="Folder for ModelOpt's files.")
    parser.add_argument("--val-images", type=int, default=101, help="CamVid val images for accuracy (0: skip).")
    add_camvid_argument(parser)
    args = parser.parse_args()

    edgeseg_model = Path(args.edgeseg)
    fp32 = Path(args.fp32).resolve()
    doc = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
           "fp32": str(fp32.relative_to(ROOT)) if fp32.is_relative_to(ROOT) else str(fp32),
           "edgeseg_file": str(edgeseg_model)}
    sidecar_path = Path(str(edgeseg_model) + ".json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    q = sidecar.get("quantization", {})
    doc["input"] = "x".join(str(sidecar.get("input", {}).get(k, "?")) for k in ("height", "width"))
    doc["edgeseg_settings"] = (f"calibrate --method {q.get('method')} (picked {q.get('selected_method')}) "
                               f"--num {q.get('num_images')} --seed {q.get('seed')}, "
                               f"bias correction {q.get('bias_correction')}, "
                               f"edgeseg {sidecar.get('versions', {}).get('edgeseg')}, onnxruntime "
                               f"{sidecar.get('versions', {}).get('onnxruntime')}")
    extra = {}
    if args.modelopt:
        modelopt_model = Path(args.modelopt)
        log = modelopt_model.with_suffix(".json")
        doc["modelopt_run"] = json.loads(log.read_text()) if log.exists() else {}
    else:
        made = produce_modelopt(args, edgeseg_model, Path(args.work))
        doc["calibration"] = made["calibration"]
        doc["modelopt_run"] = made["runs"]["modelopt"]
        modelopt_model = Path(made["runs"]["modelopt"]["path"])
        if "modelopt-edgeseg-cache" in made["runs"]:
            doc["modelopt_edgeseg_cache_run"] = made["runs"]["modelopt-edgeseg-cache"]
            extra["ModelOpt layout, edgeseg's cache scales"] = Path(made["runs"]["modelopt-edgeseg-cache"]["path"])

    e, m = layout(edgeseg_model), layout(modelopt_model)
    found = match(e, m)
    diffs = differences(e, m, found["pairs"])
    differing = {d["node"] for d in diffs}
    doc["layouts"] = {"edgeseg": e, "modelopt": m}
    doc["comparison"] = {"matched": len(found["pairs"]), "matched_by": found["matched_by"],
                         "only_in_edgeseg": found["only_in_first"], "only_in_modelopt": found["only_in_second"],
                         "same_placement": len(found["pairs"]) - len(differing),
                         "differences": diffs, "categories": categories(diffs),
                         "activation_scale_ratio": scale_ratios(e, m)}
    models = {"edgeseg": edgeseg_model, "ModelOpt": modelopt_model}
    for label, path in extra.items():
        doc["comparison"].setdefault("variants", {})[label] = {
            "file": str(path), "same_placement_as_modelopt": same_placement(layout(path), m),
            "activation_scale_ratio_vs_edgeseg": scale_ratios(e, layout(path))}
    if any(d["op"] == "Add" and d["edgeseg"] and not d["modelopt"] for d in diffs):
        rewired_path = Path(args.work) / "edgeseg-modelopt-adds.onnx"
        Path(args.work).mkdir(parents=True, exist_ok=True)
        rewired = edgeseg_with_modelopt_adds(edgeseg_model, diffs, rewired_path)
        label = "edgeseg, skip input of residual Adds only (ModelOpt's rule)"
        doc["comparison"].setdefault("variants", {})[label] = {"file": str(rewired_path), "rewired": rewired}
        extra[label] = rewired_path
    models.update(extra)
    if args.val_images:
        doc["accuracy"] = accuracy(models, Path(args.fp32), Path(args.data), args.val_images)
    doc["trt_rules"] = trt_rules(models)
    doc["notes"] = NOTES
    for layout_doc in doc["layouts"].values():
        layout_doc.pop("_records")
        layout_doc.pop("_activation_scales")
    write_results("modelopt-layout", doc, render(doc))


NOTES = [
    "Reproduce: `cp models/camvid/pruned.onnx* /tmp/cmp/ && edgeseg calibrate /tmp/cmp/pruned.onnx --images "
    "../shared/data/camvid/train/images --num 64 --seed 0 --out /tmp/cmp/pruned.int8.onnx`, then `python "
    "benchmarks/modelopt_layout.py --edgeseg /tmp/cmp/pruned.int8.onnx --modelopt-python /tmp/mo/bin/python "
    "--with-edgeseg-cache` (/tmp/mo: `python3 -m venv /tmp/mo && /tmp/mo/bin/pip install 'nvidia-modelopt[onnx]'`).",
    "What ran: ModelOpt from PyPI (`nvidia-modelopt[onnx]`) in its own venv (it brings torch, cupy and "
    "onnxruntime-gpu; only onnxruntime's CPUExecutionProvider was used), never in the project's. Options: INT8, "
    "entropy (its INT8 default), calibration_eps=['cpu'], high_precision_dtype='fp32' (its default 'fp16' would also "
    "cast the float parts to FP16; FP32 keeps the comparison to placement), everything else default "
    "(passes=['concat_elimination'], no autotune, no target_dla). Same 64 images as edgeseg, pre-processed by "
    "edgeseg. The 'edgeseg's cache scales' row is ModelOpt's own option calibration_cache_path fed edgeseg's "
    "TensorRT cache: ModelOpt's placement with edgeseg's activation scales (the same 81 shared scales, ratio 1.0), "
    "but without edgeseg's bias correction.",
    "edgeseg's file was re-written with the current code (`edgeseg calibrate` on a /tmp copy of "
    "models/camvid/pruned.onnx, 64 CamVid train images, seed 0, default auto + bias correction): conv biases stay "
    "float. The committed models/camvid/pruned.int8.onnx (200 images, INT32 biases) was not used or changed.",
    "Agreements: both put symmetric INT8 Q/DQ on op inputs only (no output quantisation), per-tensor activation "
    "scales with zero point 0, per-channel (axis 0) symmetric weights with one scale per output channel, float conv "
    "biases, Q/DQ on the image input of the first conv, INT8 Mul (SE scale) and GlobalAveragePool, and "
    "INT8 on every backbone conv (ModelOpt: all but one); both leave Relu, HardSigmoid and Sigmoid of the SE "
    "blocks and the Concat/Slice/Shape plumbing in float.",
    "Weight storage differs, not meaning: edgeseg stores INT8 initializers read by DequantizeLinear (file 1.0 MB); "
    "ModelOpt keeps FP32 weights behind a QuantizeLinear -> DequantizeLinear pair (AddQDQPairToWeight, 3.3 MB), "
    "which TensorRT constant-folds. Nothing to change.",
    "Opset: ModelOpt 0.47 raises INT8 models to opset 19 (its documented minimum for int8). edgeseg's TensorRT rules "
    "check refuses that for TensorRT 8.5 (JetPack 5, parser opsets <= 17); edgeseg keeps the model's opset 17. Not "
    "tried on a real TensorRT 8.5.",
    "edgeseg's `low_classifier` conv, listed as kept in float, reads an INT8-rounded input: ONNX Runtime's "
    "quantizer shares one DequantizeLinear per tensor, and that tensor also feeds backbone.5's quantised conv. Only "
    "its weight stays float (ModelOpt rounds the same input). Harmless, but calibrate's float_nodes overstates it.",
    "The INT8 accuracy rows lie within about 0.1 mIoU of each other on 101 val images, the size of the spread "
    "between edgeseg's own calibration methods in int8_accuracy.md (0.14-0.21): no layout choice here costs "
    "accuracy on ONNX Runtime, unlike Q/DQ on every conv output there (-1.45 and -3.09). They say nothing about "
    "TensorRT speed.",
    "Not run: TensorRT (engine build, layer fusion, latency: no TensorRT here), so every speed reason above is "
    "ModelOpt's and TensorRT's documented intent, not a measurement; ModelOpt's autotune (needs TensorRT); ModelOpt "
    "'max' calibration.",
]

if __name__ == "__main__":
    main()
