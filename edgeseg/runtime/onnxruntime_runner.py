"""ONNX Runtime runner: CPU everywhere, CUDA / TensorRT execution providers where installed."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from edgeseg.errors import InputFileError, MissingDependencyError
from edgeseg.runtime.base import Runner

ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
              "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def providers_for(device: str) -> List[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = {"cuda": ["CUDAExecutionProvider"], "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
    chosen = [p for p in wanted.get(device, []) if p in available]
    if not chosen:
        raise MissingDependencyError(
            f"ONNX Runtime here has no {device} provider (it has {', '.join(available)}); install onnxruntime-gpu "
            f"(pip install 'edgeseg[gpu]') or use --device cpu.")
    return chosen + ["CPUExecutionProvider"]


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime with I/O binding: outputs land in preallocated buffers, never a fresh 8 MB array per call.

    Results rotate through ``OUTPUT_RING`` buffers, so an array returned by ``infer``
    stays valid for the next ``OUTPUT_RING - 1`` calls; bench's pipeline holds at most
    six in flight.
    """

    backend = "onnxruntime"
    OUTPUT_RING = 8

    def __init__(self, path: str, input_shape, precision: str = "fp32", device: str = "cpu",
                 threads: Optional[int] = None, optimize: bool = True):
        super().__init__(path, input_shape, precision, device)
        self.threads = threads
        self.optimize = optimize
        # ONNX Runtime's idle workers busy-wait for the next op (its default), which takes the cores from
        # decode/encode threads running beside it: predict turns it off (benchmarks/predict_overhead.py)
        self.spin_wait = True
        self.session = None

    def _activate_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime is not installed; pip install onnxruntime.") from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize
                                            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        if self.threads:
            options.intra_op_num_threads = self.threads
        if not self.spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(self.path, options, providers=providers_for(self.device))
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            if isinstance(exc, MissingDependencyError):
                raise
            raise InputFileError(f"ONNX Runtime cannot load {self.path} ({str(exc).splitlines()[0][:160]}); "
                                 f"re-export the model.") from exc
        self.input_name = self.session.get_inputs()[0].name
        output = self.session.get_outputs()[0]
        self.output_name = output.name
        # float logits, or the uint8 / int32 / int64 class map of a model exported with --argmax
        self.output_dtype = ONNX_TYPES.get(output.type, np.float32)
        self.binding = self.session.io_binding()
        self.ring: List[np.ndarray] = []
        self.turn = 0

    def _outputs_for(self, batch: np.ndarray) -> np.ndarray:
        if not self.ring or self.ring[0].shape[0] != batch.shape[0]:
            # learn the output shape once per batch size with a plain run, then preallocate
            shape = self.session.run([self.output_name], {self.input_name: batch})[0].shape
            self.ring = [np.empty(shape, dtype=self.output_dtype) for _ in range(self.OUTPUT_RING)]
        self.turn = (self.turn + 1) % self.OUTPUT_RING
        return self.ring[self.turn]

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        out = self._outputs_for(batch)
        binding = self.binding
        binding.bind_cpu_input(self.input_name, batch)
        binding.bind_output(self.output_name, "cpu", 0, out.dtype.type, list(out.shape), out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return out

    def _deactivate_impl(self) -> None:
        self.session = self.binding = None
        self.ring = []
