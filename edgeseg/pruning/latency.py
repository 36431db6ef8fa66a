"""Measured latency of an in-memory model on a deployment backend, for ``--target-latency-ms``.

Fewer MACs is not fewer milliseconds: depthwise convolutions, memory-bound layers and
kernel choice decide the real latency. So the pruning loop exports the model exactly
as ``edgeseg export`` does, opens it with the runner ``edgeseg bench`` would use, and
times it the way ``bench`` does (warm-up, then the median of timed runs).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgeseg.benchmark.timing import latency_stats, time_inference
from edgeseg.errors import ConfigError
from edgeseg.spec import InputSpec

BACKENDS = ("onnxruntime", "tensorrt")


class LatencyProbe:
    """``probe(model)`` -> median latency in ms of one image on ``backend``/``device``."""

    def __init__(self, spec: InputSpec, backend: str = "onnxruntime", device: str = "cpu",
                 threads: Optional[int] = None, warmup: int = 10, iters: int = 40):
        if backend not in BACKENDS:
            raise ConfigError(f"Unknown --backend '{backend}'; choose one of: {', '.join(BACKENDS)}.")
        if backend == "tensorrt":
            from edgeseg.engine.api import tensorrt_available

            available, why = tensorrt_available()
            if not available:
                raise ConfigError(f"--backend tensorrt needs TensorRT, but {why}; use --backend onnxruntime.")
        self.spec, self.backend, self.device, self.threads = spec, backend, device, threads
        self.warmup, self.iters = warmup, iters
        self.batch = self._sample_batch(spec)

    @staticmethod
    def _sample_batch(spec: InputSpec) -> np.ndarray:
        """A rendered street scene, pre-processed like a real image (the same input bench times without data)."""
        from edgeseg.data.synthetic import render_scene
        from edgeseg.runtime.preprocess import preprocess

        return preprocess(render_scene(np.random.default_rng(0), spec.height, spec.width)[0], spec)

    def __call__(self, model: torch.nn.Module) -> float:
        from edgeseg.exporting.api import export_onnx

        model.eval()
        with tempfile.TemporaryDirectory(prefix="edgeseg-latency-") as folder:
            onnx_path = Path(folder) / "probe.onnx"
            export_onnx(model, onnx_path, self.spec.height, self.spec.width, opset=17)
            with self._runner(onnx_path) as runner:
                host, _ = time_inference(runner, self.batch, warmup=self.warmup, iters=self.iters)
        return latency_stats(host)["p50"]

    def _runner(self, onnx_path: Path):
        shape = (3, self.spec.height, self.spec.width)
        if self.backend == "onnxruntime":
            from edgeseg.runtime.onnxruntime_runner import OnnxRuntimeRunner

            return OnnxRuntimeRunner(str(onnx_path), shape, "fp32", self.device, self.threads)
        from edgeseg.engine.tensorrt_build import build_engine_file
        from edgeseg.runtime.tensorrt_runner import TensorRTRunner

        # FP16: what a pruned model is deployed as on a GPU when no calibration exists yet
        engine_path = onnx_path.with_suffix(".engine")
        details = build_engine_file(onnx_path, engine_path, fp16=True, int8=False, onnx_is_qdq=False,
                                    calibration_cache=None, input_shape=shape, max_batch=1, workspace_mb=2048)
        return TensorRTRunner(str(engine_path), shape, "fp16", "cuda", {"engine": details}, trust_engine=True)
