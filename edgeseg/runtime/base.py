"""The Runner contract: every backend is driven the same way, so bench and eval never care which.

Modelled on Polygraphy: a runner is a context manager with ``activate``, ``infer`` and
``deactivate``. The public methods do the checks and the timing; backends implement
only the ``_activate_impl``, ``_infer_impl`` and ``_deactivate_impl`` hooks.
"""
from __future__ import annotations

import time
from typing import Optional, Tuple

import numpy as np

from edgeseg.errors import ConfigError, EdgesegError


class Runner:
    """Runs one model on NCHW float batches and returns its output as a numpy array.

    The output is NCHW float logits, or the NxHxW class map of a model exported with
    ``--argmax``; ``edgeseg.runtime.outputs.to_class_map`` turns either into class indices.
    """

    backend = "abstract"

    def __init__(self, path: str, input_shape: Tuple[int, int, int], precision: str = "fp32", device: str = "cpu"):
        self.path = str(path)
        self.input_shape = tuple(input_shape)  # (channels, height, width)
        self.precision = precision
        self.device = device
        self.is_active = False
        self.last_inference_ms: Optional[float] = None  # host latency: copies in and out included
        self.last_compute_ms: Optional[float] = None  # device compute alone, where the backend can tell
        self._compute_ms: Optional[float] = None

    # --- public contract -------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if self.is_active:
            raise EdgesegError(f"Runner for {self.path} is already active.")
        self._activate_impl()
        self.is_active = True
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The output (logits or class map) for ``batch``; the inference's wall time goes to ``last_inference_ms``."""
        if not self.is_active:
            raise EdgesegError(f"Runner for {self.path} is not active; use it inside a `with` block.")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            raise ConfigError(f"{self.path} takes input of shape (N, {', '.join(map(str, self.input_shape))}), "
                              f"got {tuple(batch.shape)}; pre-process images to the model's input size.")
        self._compute_ms = None
        started = time.perf_counter()
        logits = self._infer_impl(np.ascontiguousarray(batch))
        self.last_inference_ms = (time.perf_counter() - started) * 1e3
        # on the CPU there are no copies: compute time is the host time
        self.last_compute_ms = self._compute_ms if self._compute_ms is not None else self.last_inference_ms
        return logits

    def peak_device_memory_mb(self) -> Optional[float]:
        """Peak device memory this runner used, where the backend can tell (None on the CPU)."""
        return None

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # --- backend hooks ---------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        raise NotImplementedError

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        pass
