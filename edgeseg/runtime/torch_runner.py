"""PyTorch runner: the reference every exported artifact is compared with, on CPU or CUDA.

On CUDA it uses channels_last memory (what cuDNN's fastest convolutions want), FP16
autocast when the precision is fp16 (``bench --precision fp16``), and replays a captured
CUDA graph for each static input shape, which removes the per-kernel launch cost that
dominates small models. Compute time comes from CUDA events around the replay; host time
adds the copies. As in the TensorRT runner, the page-locked host buffers the copies go
through are allocated once per shape (in the warm-up) and reused, so the timed calls
copy and never pin memory.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from edgeseg.errors import MissingDependencyError, option
from edgeseg.runtime.base import Runner


class TorchRunner(Runner):
    """PyTorch on CPU or CUDA.

    On CUDA, outputs rotate through ``OUTPUT_RING`` pinned buffers (the contract of the other
    runners: a returned array stays valid for the next ring-size-minus-one calls).
    """

    backend = "pytorch"
    OUTPUT_RING = 8

    def __init__(self, path: str, input_shape, precision: str = "fp32", device: str = "cpu",
                 trust_checkpoint: bool = False, threads=None, cuda_graphs: bool = True, facts=None):
        super().__init__(path, input_shape, precision, device)
        self.trust_checkpoint = trust_checkpoint
        self.facts = facts  # ModelFacts of a model file made elsewhere (a state_dict needs at least its arch)
        self.threads = threads
        self.cuda_graphs = cuda_graphs
        self.model = None
        self.graphs: Dict[tuple, tuple] = {}
        self.pinned_input = None
        self.pinned_outputs: list = []
        self.turn = 0

    def _activate_impl(self) -> None:
        import torch

        from edgeseg.checkpoint import load_model

        self.torch = torch
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device != "cpu" and not torch.cuda.is_available():
            asked = option(f"--device {self.device}", f"device={self.device!r}")
            raise MissingDependencyError(f"{asked} needs a CUDA build of PyTorch and a GPU; use "
                                         f"{option('--device cpu', 'device=' + repr('cpu'))}.")
        self.model = load_model(self.path, trust_checkpoint=self.trust_checkpoint, facts=self.facts).model.eval()
        if self.device != "cpu":
            self.device = "cuda"
            self.model = self.model.to("cuda", memory_format=torch.channels_last)
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            torch.cuda.reset_peak_memory_stats()

    def _forward(self, x):
        torch = self.torch
        # no autocast cache: a captured CUDA graph must not hold casts cached outside it
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16" and self.device == "cuda",
                            cache_enabled=False):
            out = self.model(x)
        out = out["out"] if isinstance(out, dict) else out
        return out.float()

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            if self.device == "cpu":
                return self._forward(torch.from_numpy(batch)).numpy()
            return self._infer_cuda(batch)

    def _infer_cuda(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        start, end = self.events
        host_in = self._pinned_input(batch)
        np.copyto(host_in.numpy(), batch)  # a copy into page-locked memory, as TensorRT's runner does
        if self.cuda_graphs:
            graph, static_in, static_out = self._graph_for(batch.shape)
            static_in.copy_(host_in, non_blocking=True)
            start.record()
            graph.replay()
            end.record()
            result = static_out
        else:
            x = host_in.to("cuda", non_blocking=True).contiguous(memory_format=torch.channels_last)
            start.record()
            result = self._forward(x)
            end.record()
        host_out = self._pinned_output(tuple(result.shape))
        host_out.copy_(result, non_blocking=True)
        torch.cuda.synchronize()
        self._compute_ms = start.elapsed_time(end)
        return host_out.numpy()

    def _pinned_input(self, batch: np.ndarray):
        """The page-locked input buffer for this shape: allocated on the first call at a shape, then reused."""
        tensor = self.pinned_input
        if tensor is None or tuple(tensor.shape) != batch.shape or tensor.numpy().dtype != batch.dtype:
            tensor = self.pinned_input = self.torch.empty(batch.shape, dtype=self.torch.from_numpy(batch[:0]).dtype,
                                                          pin_memory=True)
        return tensor

    def _pinned_output(self, shape: tuple):
        """The next of ``OUTPUT_RING`` page-locked output buffers; the whole ring is allocated at once per shape."""
        if not self.pinned_outputs or tuple(self.pinned_outputs[0].shape) != shape:
            self.pinned_outputs = [self.torch.empty(shape, dtype=self.torch.float32, pin_memory=True)
                                   for _ in range(self.OUTPUT_RING)]
        self.turn = (self.turn + 1) % self.OUTPUT_RING
        return self.pinned_outputs[self.turn]

    def _graph_for(self, shape: tuple):
        """Capture the model once per input shape (warm-up on a side stream first, as CUDA graphs require)."""
        if shape in self.graphs:
            return self.graphs[shape]
        torch = self.torch
        static_in = torch.zeros(shape, device="cuda").contiguous(memory_format=torch.channels_last)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        self.graphs[shape] = (graph, static_in, static_out)
        return self.graphs[shape]

    def peak_device_memory_mb(self) -> Optional[float]:
        if self.device == "cpu" or self.model is None:
            return None
        return round(self.torch.cuda.max_memory_allocated() / 2 ** 20, 2)

    def _deactivate_impl(self) -> None:
        self.graphs = {}
        self.model = None
        self.pinned_input, self.pinned_outputs = None, []
