"""Parameters and MACs counted from an ONNX graph (edgeseg/onnx_size.py), and where no sidecar says them:
info, bench's row and table. References: hand-computed MACs of a hand-made graph, and edgeseg's own PyTorch
counters (arch/profile.py, which fill the sidecar) on the models edgeseg exports."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeseg.cli.main import cli
from edgeseg.onnx_size import count_graph, model_size

ROOT = Path(__file__).resolve().parents[1]


def _init(name, shape, dtype=np.float32, value=None):
    array = np.full(shape, 0.5 if value is None else value, dtype=dtype) if value is None or np.isscalar(value) \
        else np.asarray(value, dtype=dtype)
    return numpy_helper.from_array(array, name)


def _hand_graph(batch="n", height="h", width="w"):
    """Conv -> BN -> Clip (ReLU6) -> depthwise Conv -> grouped ConvTranspose -> x0.5, + learned [4] -> pool ->
    Reshape -> Gemm -> MatMul (weight) + bias -> an activation x activation MatMul (attention-like)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, width])
    y = helper.make_tensor_value_info("attn", TensorProto.FLOAT, None)
    inits = [
        _init("w1", (8, 3, 3, 3)), _init("b1", (8,)),
        _init("bn_scale", (8,)), _init("bn_bias", (8,)), _init("bn_mean", (8,), value=0.0), _init("bn_var", (8,), value=1.0),
        _init("six", (), value=6.0), _init("zero", (), value=0.0),
        _init("w2", (8, 1, 3, 3)),
        _init("w3", (8, 2, 2, 2)), _init("b3", (4,)),
        _init("half", (), value=0.5), _init("shift", (1, 4, 1, 1)),
        _init("shape", (2,), np.int64, [-1, 4]), _init("ones", (2,), np.int64, [1, 1]),
        _init("gemm_b", (5, 4)), _init("gemm_c", (5,)),
        _init("w5", (5, 6)), _init("b5", (6,)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"]),
        helper.make_node("Clip", ["bn", "zero", "six"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("ConvTranspose", ["c2", "w3", "b3"], ["ct"], kernel_shape=[2, 2], strides=[2, 2], group=2),
        helper.make_node("Mul", ["ct", "half"], ["m"]),
        helper.make_node("Add", ["m", "shift"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["p"]),
        helper.make_node("Mul", ["shape", "ones"], ["shape_computed"]),  # shape arithmetic, as exporters write
        helper.make_node("Reshape", ["p", "shape_computed"], ["flat"]),
        helper.make_node("Gemm", ["flat", "gemm_b", "gemm_c"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "w5"], ["mm"]),
        helper.make_node("Add", ["mm", "b5"], ["lin"]),
        helper.make_node("Transpose", ["lin"], ["lin_t"]),
        helper.make_node("MatMul", ["lin_t", "lin"], ["attn"]),
    ]
    graph = helper.make_graph(nodes, "hand", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# parameters, by hand: conv 8*3*3*3 + 8, BN scale and shift 8 + 8 (not its running mean and variance), depthwise
# 8*1*3*3, ConvTranspose 8*2*2*2 + 4, the learned [1,4,1,1] shift 4 (not the scalars 0.5, 0 and 6, not the int64
# shape and the int64 tensor it is multiplied by), Gemm 5*4 + 5, MatMul 5*6 and its bias 6
HAND_PARAMS = (216 + 8) + (8 + 8) + 72 + (64 + 4) + 4 + (20 + 5) + (30 + 6)
# MACs of one 16x20 image, by hand: conv out 8x8x10 x (3/1)*3*3; depthwise out 8x8x10 x (8/8)*3*3; ConvTranspose
# input 8x8x10 x (4/2)*2*2; Gemm 5 outputs x 4; MatMul 6 outputs x 5; the activation x activation MatMul uncounted
HAND_MACS = 640 * 27 + 640 * 9 + 640 * 8 + 5 * 4 + 6 * 5


def test_a_hand_made_graph_counts_as_computed_by_hand():
    assert (HAND_PARAMS, HAND_MACS) == (445, 28210)
    size = count_graph(_hand_graph(), input_size=(16, 20))
    assert (size.params, size.macs, size.input_size) == (HAND_PARAMS, HAND_MACS, (16, 20))
    assert size.to_dict() == {"params": 445, "macs": 28210, "counted": "onnx graph", "macs_input": [16, 20]}
    # a static batch of 2: MACs are of one image, as the PyTorch counter's
    assert count_graph(_hand_graph(batch=2, height=16, width=20)).macs == HAND_MACS
    # a static size wins over the one given; a dynamic one without a size: no MACs, nothing guessed
    assert count_graph(_hand_graph(height=16, width=20), input_size=(32, 32)).macs == HAND_MACS
    unknown = count_graph(_hand_graph())
    assert unknown.params == HAND_PARAMS and unknown.macs is None and unknown.input_size is None
    # twice the size: four times the convolutions' MACs, the same for the layers after the pooling
    assert count_graph(_hand_graph(), input_size=(32, 40)).macs == 4 * (HAND_MACS - 50) + 50


def test_qdq_weights_count_once_and_their_scales_not_at_all():
    """int8 initializer -> DequantizeLinear (what calibrate writes) and float -> QuantizeLinear -> DequantizeLinear
    (a fake-quantised export): the weight counts, its per-channel scale and zero point do not."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [_init("w_int8", (4, 3, 1, 1), np.int8, 3), _init("w_scale", (4,)), _init("w_zero", (4,), np.int8, 0),
             _init("bias", (4,)),
             _init("w_float", (2, 4, 3, 3)), _init("q_scale", (2,)), _init("q_zero", (2,), np.int8, 0)]
    nodes = [helper.make_node("DequantizeLinear", ["w_int8", "w_scale", "w_zero"], ["w_dq"], axis=0),
             helper.make_node("Conv", ["x", "w_dq", "bias"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("QuantizeLinear", ["w_float", "q_scale", "q_zero"], ["w_q"], axis=0),
             helper.make_node("DequantizeLinear", ["w_q", "q_scale", "q_zero"], ["w_fq"], axis=0),
             helper.make_node("Conv", ["c", "w_fq"], ["y"], kernel_shape=[3, 3])]
    model = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    size = count_graph(model)
    assert size.params == 4 * 3 + 4 + 2 * 4 * 9
    assert size.macs == 4 * 4 * 4 * 3 + 2 * 2 * 2 * (4 * 9)  # 1x1 conv at 4x4, then a 3x3 conv down to 2x2


def _randomised(arch: str, **arch_args):
    """A model whose every tensor differs (an exporter shares equal constants: untrained zero biases would merge)."""
    from edgeseg.arch import create_model

    torch.manual_seed(0)
    model = create_model(arch, 3, **arch_args).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(-0.2, 0.2)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _folded_batchnorm(model) -> int:
    """Channels of the BatchNorms the export folds into the bias-free convolution just before them: each turns
    2C parameters (scale, shift) into the convolution's new bias (C)."""
    leaves = [m for m in model.modules() if not list(m.children())]
    return sum(bn.num_features for before, bn in zip(leaves, leaves[1:])
               if isinstance(bn, torch.nn.BatchNorm2d) and isinstance(before, torch.nn.Conv2d)
               and before.bias is None and before.out_channels == bn.num_features)


@pytest.fixture(scope="module", params=[("unet", {"base_channels": 8, "encoder_depth": 3}),
                                        ("lraspp-mobilenetv3-small", {}), ("enet", {})], ids=lambda p: p[0])
def exported(request, tmp_path_factory):
    """A checkpoint made outside edgeseg's training (no sidecar, so none of params/MACs) exported by edgeseg."""
    from edgeseg.checkpoint import save_checkpoint
    from edgeseg.exporting.api import export
    from edgeseg.spec import InputSpec

    arch, arch_args = request.param
    model = _randomised(arch, **arch_args)
    folder = tmp_path_factory.mktemp(arch)
    checkpoint = folder / f"{arch}.pt"
    save_checkpoint(checkpoint, model, arch=arch, num_classes=3, input_spec=InputSpec(height=64, width=96),
                    dataset=None, arch_args=arch_args)
    export(str(checkpoint), str(folder / f"{arch}.onnx"), verify_images=1)
    return model, folder / f"{arch}.onnx"


def test_an_edgeseg_export_counts_what_the_pytorch_counters_count(exported):
    """MACs equal count_macs exactly; params equal count_params less the folded BatchNorms' C each (enet keeps one
    BatchNorm after a concatenation, which the graph still holds and counts). enet's Slices defeat shape
    inference, so its MACs come from one ONNX Runtime run."""
    from edgeseg.arch.profile import count_macs, count_params

    model, path = exported
    size = count_graph(path)
    assert size.input_size == (64, 96)
    assert size.macs == count_macs(model, 64, 96)
    assert size.params == count_params(model) - _folded_batchnorm(model)
    assert _folded_batchnorm(model) > 0
    # what ONNX Runtime saves at the extended level (build-engine --backend onnxruntime): Conv+ReLU/HardSwish fused
    # into com.microsoft FusedConv, which onnx's shape inference does not know; the same figures
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path.with_suffix(".ort.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = count_graph(options.optimized_model_filepath)
    fused_ops = {n.op_type for n in __import__("onnx").load(options.optimized_model_filepath).graph.node}
    assert ("FusedConv" in fused_ops) == (path.stem != "enet")  # ENet's PReLU does not fuse
    assert (fused.params, fused.macs) == (size.params, size.macs)


def test_info_and_bench_show_the_counted_figures_where_the_sidecar_has_none(exported, tmp_path):
    from edgeseg.arch.profile import count_macs, count_params
    from edgeseg.benchmark.api import bench_one
    from edgeseg.benchmark.table import markdown_table

    model, path = exported
    meta = json.loads(Path(f"{path}.json").read_text())
    assert "params" not in meta["model"] and "macs" not in meta["model"]  # what made these figures show 0.00M
    params, macs = count_params(model) - _folded_batchnorm(model), count_macs(model, 64, 96)
    said = " ".join(CliRunner().invoke(cli, ["info", str(path)]).output.split())
    assert (f"params {params / 1e6:.2f}M MACs {macs / 1e9:.3f}G at 64x96 (counted from the ONNX graph" in said), said
    shown = json.loads(CliRunner().invoke(cli, ["info", str(path), "--json"]).output)["model"]
    assert (shown["params"], shown["macs"], shown["counted"], shown["macs_input"]) == (params, macs, "onnx graph",
                                                                                         [64, 96])
    row = bench_one(path, None, warmup=0, iters=1)
    assert (row["params"], row["macs"], row["counted"]) == (params, macs, "onnx graph")
    table = markdown_table([dict(row, stage="model")])
    assert f"| {params / 1e6:.2f} | {macs / 1e9:.3f} |" in table and "of model counted from the ONNX graph" in table
    # the same graph without a sidecar (another tool's export): the same figures, and the same in its summary
    foreign = tmp_path / "foreign.onnx"
    shutil.copy(path, foreign)
    summary = json.loads(CliRunner().invoke(cli, ["info", str(foreign), "--json"]).output)
    assert (summary["params"], summary["macs"], summary["counted"]) == (params, macs, "onnx graph")


def test_a_sidecars_figures_win_and_an_engine_gets_dashes(tmp_path):
    from edgeseg.benchmark.table import markdown_table, rows_as_text

    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(_hand_graph(height=16, width=20).SerializeToString())
    recorded = {"model": {"params": 7, "macs": 9}}
    assert model_size(recorded, onnx_path) == {"params": 7, "macs": 9}  # no "counted": the sidecar says them
    assert model_size({"model": {"params": 7}}, onnx_path) == {"params": 7, "macs": HAND_MACS, "counted": "onnx graph"}
    assert model_size({"model": {"macs": 9}}, onnx_path) == {"params": HAND_PARAMS, "macs": 9, "counted": "onnx graph"}
    assert model_size({}, onnx_path) == {"params": HAND_PARAMS, "macs": HAND_MACS, "counted": "onnx graph"}
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a graph")
    assert model_size({}, engine) == {"params": None, "macs": None}
    assert rows_as_text([{"stage": "m.engine", "params": None, "macs": None}])[0][3:5] == ["-", "-"]
    assert "counted" not in markdown_table([{"stage": "m.engine", "params": None, "macs": None}])


def test_an_int8_model_counts_the_same_as_its_float_one(exported, tmp_path):
    """calibrate's Q/DQ layout (INT8 weights behind DequantizeLinear, per-channel scales, float biases)."""
    import onnx

    from edgeseg.quant.qdq import write_qdq

    _, path = exported
    graph = onnx.load(str(path)).graph
    names = {name for node in graph.node for name in list(node.input) + list(node.output) if name}
    ranges = {name: (-4.0, 4.0) for name in names - {i.name for i in graph.initializer}}
    int8 = tmp_path / "m.int8.onnx"
    write_qdq(path, int8, ranges)
    quantized = onnx.load(str(int8)).graph
    assert any(i.data_type == TensorProto.INT8 for i in quantized.initializer)
    float_size, int8_size = count_graph(path), count_graph(int8)
    assert (int8_size.params, int8_size.macs) == (float_size.params, float_size.macs)


def test_the_size_module_runs_without_torch_and_on_python_3_8():
    code = ("import sys\nfor name in ('torch', 'torchvision'):\n    sys.modules[name] = None\n"
            + _HAND_GRAPH_WITHOUT_TORCH + "from edgeseg.onnx_size import count_graph\n"
            "size = count_graph(_hand_graph(), (16, 20))\nprint(size.params, size.macs)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.split() == [str(HAND_PARAMS), str(HAND_MACS)], result.stderr
    vermin = shutil.which("vermin") or (Path(sys.executable).parent / "vermin")
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (pip install 'edgeseg[dev]')")
    result = subprocess.run([str(vermin), "-t=3.8-", "--violations", "--no-tips", "--eval-annotations",
                             "--backport", "dataclasses", "edgeseg/onnx_size.py", "edgeseg/artifact_info.py",
                             "edgeseg/benchmark/table.py"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# this file imports torch at the top, so the torch-free run takes the graph builder's source alone
_HAND_GRAPH_WITHOUT_TORCH = "\n".join([
    "import numpy as np", "from onnx import TensorProto, helper, numpy_helper",
    __import__("inspect").getsource(_init), __import__("inspect").getsource(_hand_graph), ""])
