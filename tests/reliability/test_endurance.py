"""Endurance: 10,000 iterations through the runners and the C core keep resident memory flat.

Peak RSS while timing must stay within 5% of its value after warm-up; a leak of even a
few KB per call would exceed that over 10,000 calls of these tiny models.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

ITERATIONS = 10_000
MAX_GROWTH_PERCENT = 5.0


@pytest.mark.parametrize("runner", ["onnxruntime", "pytorch"], ids=["endurance: bench an ONNX model 10,000 times",
                                                                    "endurance: bench a checkpoint 10,000 times"])
def test_bench_keeps_peak_rss_within_5_percent_of_its_value_after_warmup(runner, tiny_onnx, tiny_student, tmp_path):
    model = tiny_onnx if runner == "onnxruntime" else tiny_student
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "edgeseg.cli", "bench", str(model), "--iters", str(ITERATIONS),
                             "--warmup", "200", "--threads", "1", "--json", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]
    measured = json.loads(out.read_text())
    assert measured["iterations"] == ITERATIONS and measured["backend"] == runner
    rss = measured["rss_mb"]
    assert rss["peak_while_timing"] >= rss["after_warmup"] * 0.5  # both are real readings of this process
    assert rss["growth_percent"] <= MAX_GROWTH_PERCENT, rss


def test_c_core_keeps_rss_flat_over_10000_images():
    """Pre-processing, argmax and confusion accumulation of 10,000 frames, in a fresh process."""
    script = textwrap.dedent(f"""
        import json
        import numpy as np
        from edgeseg.benchmark.memory import RssSampler, current_rss_mb
        from edgeseg.runtime import native
        from edgeseg.runtime.preprocess import preprocess
        from edgeseg.spec import InputSpec

        assert native.BACKEND == "c", "the C core is not built"
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        label = rng.integers(0, 11, (120, 160)).astype(np.uint8)
        spec = InputSpec(height=96, width=128)
        confusion = np.zeros((11, 11), np.int64)

        # a few logits tensors, cycled: drawing fresh random numbers each frame would cost more than the C core
        logits = [rng.standard_normal((1, 11, 120, 160)).astype(np.float32) for _ in range(4)]

        def frame(i):
            batch = preprocess(image, spec)
            assert batch.shape == (1, 3, 96, 128)
            native.accumulate_confusion(confusion, native.argmax(logits[i % 4])[0], label, 255)

        for i in range(500):
            frame(i)
        after_warmup = current_rss_mb()
        with RssSampler() as rss:
            for i in range({ITERATIONS}):
                frame(i)
        print(json.dumps({{"after_warmup": after_warmup, "peak": rss.peak_mb, "pixels": int(confusion.sum())}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["pixels"] == (ITERATIONS + 500) * 120 * 160  # every frame was really counted
    assert measured["peak"] <= measured["after_warmup"] * (1 + MAX_GROWTH_PERCENT / 100), measured
