import json
from pathlib import Path

import numpy as np
import pytest

from edgeseg.benchmark.api import bench, eval as evaluate
from edgeseg.errors import AccuracyError, ConfigError, EdgesegError
from edgeseg.runtime.loader import describe, open_runner


def test_bench_reports_latency_and_accuracy(tiny_onnx, tiny_student, tiny_data, tmp_path):
    out = tmp_path / "b.json"
    results = bench([str(tiny_student), str(tiny_onnx)], str(tiny_data), json_out=str(out), iters=3, warmup=1)
    doc = json.loads(out.read_text())["results"]
    for row in doc:
        for key in ("backend", "precision", "device", "num_images", "miou", "per_class_iou", "fps", "phases_ms",
                    "peak_rss_mb"):
            assert key in row
        assert set(row["latency_ms"]) >= {"mean", "p50", "p90", "p99"}
        assert row["num_images"] == 4
    # the same weights give the same mIoU through PyTorch and ONNX Runtime
    assert results[0]["miou"] == pytest.approx(results[1]["miou"], abs=0.5)


def test_min_miou_fails_the_run(tiny_onnx, tiny_data):
    with pytest.raises(AccuracyError, match="below --min-miou"):
        bench(str(tiny_onnx), str(tiny_data), iters=1, warmup=0, min_miou=101.0)


def test_eval_matches_a_confusion_matrix_computed_by_hand(tiny_onnx, tiny_data):
    from edgeseg.data.dataset import resolve_split
    from edgeseg.metrics import confusion_matrix, mean_iou
    from edgeseg.runtime.preprocess import preprocess

    result = evaluate(str(tiny_onnx), str(tiny_data))
    artifact = describe(tiny_onnx)
    split = resolve_split(tiny_data, "val")
    cm = np.zeros((8, 8), np.int64)
    with open_runner(artifact) as runner:
        for i in range(len(split)):
            pred = runner.infer(preprocess(split.image(i), artifact.input_spec))[0].argmax(0)
            cm += confusion_matrix(pred, split.label(i), 8, 255)
    assert result["miou"] == pytest.approx(mean_iou(cm), abs=1e-3)


def test_class_mismatch_is_refused(tiny_onnx, tmp_path):
    from edgeseg.data.synthetic import SyntheticConfig, write_dataset

    other = write_dataset(tmp_path / "d", SyntheticConfig(num_train=1, num_val=1, height=32, width=32))
    (other / "dataset.yaml").write_text("num_classes: 12\nignore_index: 255\n")
    with pytest.raises(EdgesegError) as caught:
        evaluate(str(tiny_onnx), str(other))
    yaml_path = other / "dataset.yaml"
    assert str(caught.value) == (f"{tiny_onnx.name}'s sidecar says 8 classes but {yaml_path} says 12; fix num_classes "
                                 f"in {yaml_path}, or use a model trained for this data.")


def test_runner_contract(tiny_onnx):
    artifact = describe(tiny_onnx)
    runner = open_runner(artifact)
    with pytest.raises(EdgesegError, match="not active"):
        runner.infer(np.zeros((1, 3, 64, 64), np.float32))
    with runner:
        with pytest.raises(ConfigError, match="takes input of shape"):
            runner.infer(np.zeros((1, 3, 32, 32), np.float32))
        assert runner.infer(np.zeros((2, 3, 64, 64), np.float32)).shape == (2, 8, 64, 64)
        assert runner.last_inference_ms > 0
    assert not runner.is_active


def test_pipeline_keeps_order_and_times_each_stage():
    from edgeseg.benchmark.pipeline import run_pipeline

    seen = []
    seconds = run_pipeline(20, lambda i: i * 2, lambda x: x + 1, seen.append, depth=2)
    assert seen == [i * 2 + 1 for i in range(20)]
    assert set(seconds) == {"load", "infer", "finish", "wall"}


@pytest.mark.parametrize("failing", ["load", "finish"])
def test_pipeline_reraises_errors_from_its_threads(failing):
    from edgeseg.benchmark.pipeline import run_pipeline

    def boom(_):
        raise ValueError("bad image")

    load = boom if failing == "load" else (lambda i: i)
    finish = boom if failing == "finish" else (lambda r: None)
    with pytest.raises(ValueError, match="bad image"):
        run_pipeline(50, load, lambda x: x, finish, depth=2)


def test_duration_mode_times_as_many_calls_as_fit(tiny_onnx):
    result = bench(str(tiny_onnx), iters=1, warmup=1, warmup_ms=20, duration=0.3, show=False)[0]
    assert result["iterations"] > 1  # as many as fit in the duration, not --iters
    # on the CPU there are no copies, so the compute column is the host column, call for call
    assert result["compute_latency_ms"] == result["latency_ms"]
    assert result["device_memory_mb"] is None and "CPU" in result["device_memory_source"]


class FakeGpu:
    """A GPU's free memory as cudaMemGetInfo would report it, moved by FakeGpuRunner."""

    free = 8000 * 2**20


class FakeGpuRunner:
    """A runner on a 'GPU': 2 ms a call with copies, 0.5 ms of it compute; 300 MiB once active, 350 after a call."""

    def __new__(cls, path, backend="fake", own_peak_mb=None):
        from edgeseg.runtime.base import Runner

        class Fake(Runner):
            def _activate_impl(self):
                FakeGpu.free -= 300 * 2**20

            def _infer_impl(self, batch):
                import time

                if not getattr(self, "called", False):
                    FakeGpu.free -= 50 * 2**20  # workspace grown on the first call
                    self.called = True
                time.sleep(0.002)
                self._compute_ms = 0.5  # what CUDA events would say
                return np.zeros((batch.shape[0], 8, 64, 64), np.float32)

            def _deactivate_impl(self):
                FakeGpu.free += 350 * 2**20

            def peak_device_memory_mb(self):
                return own_peak_mb

        runner = Fake(str(path), (3, 64, 64), "fp32", "cuda")
        runner.backend = backend
        return runner


@pytest.fixture
def fake_gpu(tiny_onnx, monkeypatch):
    import edgeseg.benchmark.api as api

    def install(reader=True, **runner_options):
        monkeypatch.setattr(api, "_open", lambda path, *a, **k: (describe(tiny_onnx),
                                                                  FakeGpuRunner(path, **runner_options)))
        monkeypatch.setattr(api, "cuda_free_memory_reader",
                            lambda: ((lambda: FakeGpu.free), "cudaMemGetInfo (fake)") if reader else None)
    return install


def test_compute_latency_is_the_backends_own_figure_not_the_host_time(fake_gpu, tiny_onnx):
    fake_gpu()
    result = bench(str(tiny_onnx), iters=5, warmup=1, device="cuda", show=False)[0]
    assert result["compute_latency_ms"]["p50"] == 0.5  # the runner's CUDA-event time, exactly
    assert result["latency_ms"]["p50"] >= 2.0  # host time: the whole call, copies included


def test_device_memory_is_measured_from_before_activation(fake_gpu, tiny_data, tiny_onnx):
    fake_gpu()
    result = bench(str(tiny_onnx), str(tiny_data), iters=2, warmup=1, device="cuda", show=False)[0]
    assert result["device_memory_mb"] == 350.0  # 300 MiB at activation + 50 MiB on the first call
    assert result["device_memory_source"].startswith("cudaMemGetInfo (fake): free GPU memory before activation")


@pytest.mark.parametrize("backend,own,says", [
    ("pytorch", 12.5, "max_memory_allocated"), ("tensorrt", 40.0, "weights are not counted"),
    ("onnxruntime", None, "not measured")])
def test_device_memory_without_a_cuda_library_says_what_the_figure_is(fake_gpu, tiny_onnx, backend, own, says):
    fake_gpu(reader=False, backend=backend, own_peak_mb=own)
    result = bench(str(tiny_onnx), iters=1, warmup=0, device="cuda", show=False)[0]
    assert result["device_memory_mb"] == own and says in result["device_memory_source"]


def test_precision_fp16_needs_cuda_and_a_pytorch_checkpoint(tiny_student, tiny_onnx):
    with pytest.raises(ConfigError, match="needs a GPU: add --device cuda"):
        bench(str(tiny_student), iters=1, precision="fp16", show=False)
    with pytest.raises(ConfigError, match="applies to PyTorch checkpoints"):
        bench(str(tiny_onnx), iters=1, precision="fp16", device="cuda", show=False)
    from click.testing import CliRunner

    from edgeseg.cli.main import cli

    result = CliRunner().invoke(cli, ["bench", str(tiny_student), "--precision", "fp16", "--iters", "1"])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("Error: --precision fp16")


def test_precision_fp16_reaches_the_torch_runner_and_its_autocast(tiny_student, tiny_onnx, monkeypatch):
    import torch
    from click.testing import CliRunner

    from edgeseg.checkpoint import load_model
    from edgeseg.cli.main import cli
    from edgeseg.runtime import torch_runner

    class Stop(Exception):
        pass

    opened = []
    real_init = torch_runner.TorchRunner.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append((Path(self.path).name, self.precision, self.device))
        raise Stop  # no GPU here: stop before activation

    monkeypatch.setattr(torch_runner.TorchRunner, "__init__", spy)
    result = CliRunner().invoke(cli, ["bench", str(tiny_student), "--precision", "fp16", "--device", "cuda"])
    assert isinstance(result.exception, Stop) and opened == [("student.pt", "fp16", "cuda")]
    monkeypatch.undo()

    autocasts = []

    class Autocast:  # stands in for torch.autocast, which needs a GPU to do anything
        def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
            autocasts.append((device_type, dtype, enabled, cache_enabled))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch, "autocast", Autocast)
    for precision in ("fp16", "fp32"):
        runner = torch_runner.TorchRunner(str(tiny_student), (3, 64, 64), precision=precision, device="cuda")
        runner.torch, runner.model = torch, load_model(tiny_student).model.eval()
        runner.device = "cuda"  # as activation sets it; the model itself stays on the CPU
        assert runner._forward(torch.zeros(1, 3, 64, 64)).dtype == torch.float32
    assert autocasts == [("cuda", torch.float16, True, False), ("cuda", torch.float16, False, False)]


def test_power_needs_tegrastats(tiny_onnx, monkeypatch):
    from edgeseg.errors import MissingDependencyError

    monkeypatch.setenv("PATH", "")
    with pytest.raises(MissingDependencyError, match="tegrastats"):
        bench(str(tiny_onnx), iters=1, warmup=0, power=True, show=False)


def _fake_engine(tmp_path, tiny_onnx, sha_matches):
    import hashlib

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    meta = json.loads(tiny_onnx.with_name("student.onnx.json").read_text())
    meta["sha256"] = hashlib.sha256(engine.read_bytes()).hexdigest() if sha_matches else "0" * 64
    (tmp_path / "m.engine.json").write_text(json.dumps(meta))
    return engine


def test_engine_with_foreign_sha256_is_refused_before_anything_loads(tiny_onnx, tmp_path):
    from edgeseg.errors import UntrustedFileError

    engine = _fake_engine(tmp_path, tiny_onnx, sha_matches=False)
    with pytest.raises(UntrustedFileError, match="--trust-engine"):
        open_runner(describe(engine)).activate()


def test_engine_without_tensorrt_says_what_is_missing(tiny_onnx, tmp_path):
    from edgeseg.errors import MissingDependencyError

    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    engine = _fake_engine(tmp_path, tiny_onnx, sha_matches=True)
    with pytest.raises(MissingDependencyError, match="TensorRT is not installed"):
        open_runner(describe(engine)).activate()
