"""CUDA paths of the PyTorch runner: only where a CUDA device is present."""
import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    return torch


@pytest.mark.parametrize("graphs", [True, False])
def test_cuda_runner_matches_cpu(cuda, tiny_student, graphs):
    from edgeseg.runtime.loader import describe
    from edgeseg.runtime.torch_runner import TorchRunner

    artifact = describe(tiny_student)
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with TorchRunner(str(tiny_student), (3, 64, 64), device="cpu") as cpu:
        reference = cpu.infer(batch).copy()
    with TorchRunner(str(tiny_student), (3, 64, 64), device="cuda", cuda_graphs=graphs) as gpu:
        for _ in range(3):  # replays of a captured graph must keep giving the same answer
            out = gpu.infer(batch)
        assert gpu.last_compute_ms is not None and gpu.last_compute_ms <= gpu.last_inference_ms
        assert gpu.peak_device_memory_mb() > 0
    assert np.abs(out - reference).max() < 1e-3
    assert (out.argmax(1) == reference.argmax(1)).mean() > 0.999
    assert artifact.backend == "pytorch"
