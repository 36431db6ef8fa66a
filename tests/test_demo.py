import json

import onnx
import pytest

from edgeseg.engine.api import tensorrt_available
from edgeseg.pipeline import demo

# measured with `demo(fast=True)`, seed 0, on this project's 2-core CI machine
MEASURED_MIOU = {"your model": 8.01, "pruned + KD fine-tuned": 9.32}  # scene style 2, class weights


def test_fast_demo_runs_every_stage_and_writes_the_report(tmp_path):
    report = demo(str(tmp_path / "demo"), fast=True)
    stages = [row["stage"] for row in report["stages"]]
    with_tensorrt = tensorrt_available()[0]
    assert stages[:3] == ["your model", "pruned + KD fine-tuned", "ONNX FP32"] and len(stages) == 4
    assert stages[-1] == f"engine INT8 ({'tensorrt' if with_tensorrt else 'onnxruntime'})"
    written = json.loads((tmp_path / "demo" / "report.json").read_text())
    for row in written["stages"]:
        assert row["latency_ms"]["p50"] > 0 and row["params"] > 0
    miou = {row["stage"]: row["miou"] for row in written["stages"]}
    # every stage is seeded (seed 0), so each reaches what it reached when measured; 1.5 mIoU for another CPU's
    # arithmetic. One epoch a stage on 16 images checks the path, not the accuracy: these are near chance.
    for stage, measured in MEASURED_MIOU.items():
        assert miou[stage] == pytest.approx(measured, abs=1.5), stage
    # the export is the pruned model (measured: the same to the last digit) and INT8 stays within 1.0 of it
    assert miou["ONNX FP32"] == pytest.approx(miou["pruned + KD fine-tuned"], abs=0.05)
    assert abs(miou[stages[-1]] - miou["ONNX FP32"]) <= 1.0  # measured 9.32, +0.00
    from tests.onnx_checks import quantized_conv_share

    assert quantized_conv_share(tmp_path / "demo" / "pruned.int8.onnx") >= 0.5  # the last stage really is INT8
    # without TensorRT the engine is ONNX Runtime's: its CPU layout (outputs quantised too, asymmetric, the
    # Relus folded into the convs), so the INT8 model has no Relu left; with TensorRT, TensorRT's layout
    calibration = json.loads((tmp_path / "demo" / "pruned.int8.onnx.json").read_text())["quantization"]
    assert calibration["quantize_outputs"] is not with_tensorrt and calibration["symmetric"] is with_tensorrt
    relus = [n for n in onnx.load(str(tmp_path / "demo" / "pruned.int8.onnx")).graph.node if n.op_type == "Relu"]
    assert bool(relus) is with_tensorrt
    pruned = json.loads((tmp_path / "demo" / "pruned.pt.json").read_text())
    assert pruned["prune"]["ratio"] == 0.5 and pruned["model"]["macs"] < 0.5 * pruned["prune"]["macs_before"]
    markdown = (tmp_path / "demo" / "report.md").read_text()
    assert "| your model |" in markdown and "mIoU %" in markdown
    for name in ("model.pt", "pruned.pt", "pruned.onnx", "pruned.int8.onnx", "pruned.calib.cache"):
        assert (tmp_path / "demo" / name).exists() and (tmp_path / "demo" / name).stat().st_size > 0
    for figure in ("latency_vs_miou.png", "per_class_iou.png", "masks.png"):
        assert (tmp_path / "demo" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure})" in markdown
    manifest = json.loads((tmp_path / "demo" / "stages.json").read_text())
    assert [s["name"] for s in manifest["stages"]] == stages  # `edgeseg report` can measure the run again
