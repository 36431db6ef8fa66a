"""The deploy side (runners, bench, eval, info, data readers, metrics) must work without torch,
and must stay valid Python 3.8 (JetPack 5 on Xavier ships 3.8)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_MODULES = ["edgeseg/runtime", "edgeseg/benchmark", "edgeseg/data/dataset.py", "edgeseg/data/images.py",
                  "edgeseg/data/synthetic.py", "edgeseg/metrics.py", "edgeseg/artifact_info.py", "edgeseg/sidecar.py",
                  "edgeseg/spec.py", "edgeseg/fileio.py", "edgeseg/errors.py", "edgeseg/console.py",
                  "edgeseg/engine", "edgeseg/cli", "edgeseg/__init__.py", "edgeseg/device_info.py",
                  "edgeseg/foreign_onnx.py", "edgeseg/data/layouts.py", "edgeseg/data/resize.py", "edgeseg/predict",
                  "edgeseg/report/figures.py", "edgeseg/huggingface.py", "edgeseg/onnx_size.py"]

NO_TORCH = """
import sys
for name in ("torch", "torchvision", "torch_pruning"):
    sys.modules[name] = None  # any import of them now raises ImportError
from edgeseg.cli.main import main
main(sys.argv[1:])
"""


def _run_without_torch(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, cwd=cwd)


def test_bench_eval_info_and_build_run_without_torch(tiny_onnx, tiny_data, tmp_path):
    from edgeseg.benchmark.api import eval as evaluate

    # what the same ONNX Runtime reaches on the same images in this process, where torch is loaded
    reference = evaluate(str(tiny_onnx), str(tiny_data))
    out = tmp_path / "bench.json"
    result = _run_without_torch("bench", str(tiny_onnx), "--data", str(tiny_data), "--iters", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    benched = json.loads(out.read_text())
    assert benched["miou"] == reference["miou"] and benched["per_class_iou"] == reference["per_class_iou"]
    assert benched["num_images"] == 4 and benched["latency_ms"]["p50"] > 0
    evaluated = tmp_path / "eval.json"
    result = _run_without_torch("eval", str(tiny_onnx), "--data", str(tiny_data), "--json", str(evaluated))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(evaluated.read_text())["miou"] == reference["miou"]
    result = _run_without_torch("info", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["torch"] is None, result.stderr[-2000:]
    result = _run_without_torch("info", str(tiny_onnx))
    assert result.returncode == 0 and tiny_onnx.name in result.stdout, result.stderr[-2000:]
    built = tmp_path / "m.ort.onnx"
    result = _run_without_torch("build-engine", str(tiny_onnx), "--out", str(built))
    assert result.returncode == 0 and built.is_file(), f"build-engine: {result.stderr[-2000:]}"


def test_a_training_verb_without_torch_fails_with_a_message_not_a_crash(tmp_path):
    result = _run_without_torch("train", "--arch", "unet", "--data", "synthetic", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert last.startswith("Error:") and "torch" in last.lower() and "Traceback" not in result.stderr


def test_predict_and_segmenter_run_without_torch(tiny_onnx, tiny_data, tmp_path):
    result = _run_without_torch("predict", str(tiny_onnx), str(tiny_data / "val" / "images"), "--out",
                                str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "out" / "masks").iterdir())) == len(list((tiny_data / "val" / "images").iterdir()))
    code = ("import sys\nfor name in ('torch', 'torchvision'):\n    sys.modules[name] = None\n"
            "import numpy as np, edgeseg\n"
            f"print(edgeseg.Segmenter({str(tiny_onnx)!r})(np.zeros((33, 47, 3), np.uint8)).shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "(33, 47)", result.stderr[-2000:]


def test_deploy_side_is_python_3_8_compatible():
    vermin = shutil.which("vermin") or (Path(sys.executable).parent / "vermin")
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (pip install 'edgeseg[dev]')")
    result = subprocess.run([str(vermin), "-t=3.8-", "--violations", "--no-tips", "--eval-annotations",
                             "--backport", "dataclasses", *DEPLOY_MODULES], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_device_report_reads_the_l4t_release(monkeypatch, tmp_path):
    from edgeseg import device_info

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n")
    real_read = device_info._read
    monkeypatch.setattr(device_info, "_read",
                        lambda path: real_read(str(release)) if path == "/etc/nv_tegra_release" else real_read(path))
    assert device_info.l4t_release() == "36.4.0"
    report = device_info.device_report()
    assert report["l4t"] == "36.4.0" and report["host_kernels"] in ("c", "numpy") and "tensorrt" in report


def test_a_pytorch_model_without_torch_is_one_sentence(tmp_path):
    folder = tmp_path / "segformer"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["SegformerForSemanticSegmentation"], '
                                        '"model_type": "segformer", "id2label": {"0": "a", "1": "b"}}')
    (folder / "model.safetensors").write_bytes(b"0")
    for model in (folder, tmp_path / "weights.pt"):
        if model.suffix == ".pt":
            model.write_bytes(b"not read")
        result = _run_without_torch("bench", str(model), "--iters", "1", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "is a PyTorch model (a checkpoint or a Hugging Face folder), which runs with torch" in result.stderr
        assert "Traceback" not in result.stderr
