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


def test_bench_precision_fp16_runs_the_convolutions_in_half(cuda, tiny_student):
    from edgeseg.benchmark.api import bench
    from edgeseg.runtime.torch_runner import TorchRunner

    batch = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with TorchRunner(str(tiny_student), (3, 64, 64), precision="fp16", device="cuda") as fp16, \
            TorchRunner(str(tiny_student), (3, 64, 64), device="cuda") as fp32:
        dtypes = []
        conv = next(m for m in fp16.model.modules() if isinstance(m, cuda.nn.Conv2d))
        conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
        half, full = fp16.infer(batch).copy(), fp32.infer(batch)
    assert dtypes and set(dtypes) == {cuda.float16} and half.dtype == np.float32
    assert (half.argmax(1) == full.argmax(1)).mean() > 0.99
    row = bench(str(tiny_student), iters=3, warmup=1, device="cuda", precision="fp16", show=False)[0]
    assert row["precision"] == "fp16" and row["backend"] == "pytorch"
    # measured with CUDA's memory info from before activation: the weights and the allocator's cache count
    assert row["device_memory_mb"] > 0 and row["device_memory_source"].startswith("cudaMemGetInfo (torch")


@pytest.mark.parametrize("graphs", [True, False])
def test_timed_calls_copy_into_pinned_buffers_and_never_pin_memory(cuda, tiny_student, graphs, monkeypatch):
    from edgeseg.runtime.torch_runner import TorchRunner

    batch = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with TorchRunner(str(tiny_student), (3, 64, 64), device="cuda", cuda_graphs=graphs) as runner:
        runner.infer(batch)  # the warm-up call allocates the page-locked buffers
        pinned = []
        real_empty, real_pin = cuda.empty, cuda.Tensor.pin_memory

        def empty(*args, **kwargs):
            if kwargs.get("pin_memory"):
                pinned.append(args)
            return real_empty(*args, **kwargs)

        def pin_memory(self, *args, **kwargs):
            pinned.append("pin_memory")
            return real_pin(self, *args, **kwargs)

        monkeypatch.setattr(cuda, "empty", empty)
        monkeypatch.setattr(cuda.Tensor, "pin_memory", pin_memory)
        outputs = [runner.infer(batch) for _ in range(runner.OUTPUT_RING)]
        monkeypatch.undo()
        assert pinned == []  # no page-locking inside a timed call, as in the TensorRT runner
        assert len({out.ctypes.data for out in outputs}) == runner.OUTPUT_RING  # results rotate through the ring
        assert all(np.array_equal(out, outputs[0]) for out in outputs)


def test_polygraphy_reaches_this_gpu_through_the_system_libcudart(cuda):
    """What the TensorRT runner relies on, on a real GPU: Polygraphy's ctypes CUDA wrapper and edgeseg's calls
    through its handle (device facts, free memory, events) agree with PyTorch's view of the same device."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("polygraphy")
    from polygraphy import cuda as pg_cuda

    from edgeseg.runtime.cuda_device import EventTimer, device_info, free_bytes

    info = device_info()
    major, minor = torch.cuda.get_device_capability(0)
    assert info == {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    assert abs(free_bytes() - torch.cuda.mem_get_info()[0]) < 512 << 20
    host = np.arange(1 << 20, dtype=np.float32)
    with pg_cuda.Stream() as stream:
        array = pg_cuda.DeviceArray.raw((host.nbytes,))
        timer = EventTimer()
        timer.record(0, stream.ptr)
        array.copy_from(host.view(np.uint8), stream=stream)
        timer.record(1, stream.ptr)
        stream.synchronize()
        back = np.empty(host.nbytes, np.uint8)
        array.copy_to(back, stream=stream)
        stream.synchronize()
        assert np.array_equal(back.view(np.float32), host) and timer.elapsed_ms() > 0
        timer.close()
        array.free()
