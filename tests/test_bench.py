import json

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
    with pytest.raises(EdgesegError, match="predicts 8 classes but"):
        evaluate(str(tiny_onnx), str(other))


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


def test_duration_mode_and_host_vs_compute_latency(tiny_onnx):
    result = bench(str(tiny_onnx), iters=1, warmup=1, warmup_ms=20, duration=0.3, show=False)[0]
    assert result["iterations"] > 1  # as many as fit in the duration, not --iters
    assert set(result["compute_latency_ms"]) >= {"mean", "p50", "p90", "p99"}
    assert result["compute_latency_ms"]["p50"] <= result["latency_ms"]["p50"] + 1e-9
    assert result["peak_device_memory_mb"] is None  # CPU


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
