"""The prepared GPU check (benchmarks/device_check.sh) must work the first time a GPU is lent: its timing
script runs here on the CPU at a tiny size, through the same code path."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cuda_runner_benchmark_runs_every_configuration(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_runner.py"), "--device", "cpu",
                             "--sizes", "64x64:4", "--iters", "2", "--rounds", "1", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "cuda_runner.json").read_text())
    rows = data["sizes"][0]["rows"]
    assert {(r["precision"], r["cuda_graphs"]) for r in rows} == {("fp32", False), ("fp32", True), ("fp16", False),
                                                                   ("fp16", True)}
    assert all(r["calls"] == 2 and r["host_p50_ms"] > 0 for r in rows)
    assert all(r["argmax_agreement_with_fp32"] == 1.0 for r in rows)  # on the CPU every configuration is FP32
    assert (tmp_path / "cuda_runner.md").read_text().count("| 64x64 | 4 |") == 5
    assert set(data["sizes"][0]["output_forms_p50_ms"]) == {"logits + host argmax", "class map (argmax on the device)"}


def test_device_check_script_is_valid_and_installs_what_the_gpu_machine_lacks():
    script = ROOT / "benchmarks" / "device_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    # polygraphy: the gpu tests drive its ctypes CUDA wrapper on the real libcudart
    assert "torch-pruning onnxslim polygraphy" in text and '"$WHEELS"/*.whl' in text
    assert "-m gpu" in text and "benchmarks/cuda_runner.py" in text
