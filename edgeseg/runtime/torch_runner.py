"""PyTorch runner: the reference every exported artifact is compared with."""
from __future__ import annotations

import numpy as np

from edgeseg.runtime.base import Runner


class TorchRunner(Runner):
    backend = "pytorch"

    def __init__(self, path: str, input_shape, precision: str = "fp32", device: str = "cpu",
                 trust_checkpoint: bool = False, threads=None):
        super().__init__(path, input_shape, precision, device)
        self.trust_checkpoint = trust_checkpoint
        self.threads = threads
        self.model = None

    def _activate_impl(self) -> None:
        import torch

        from edgeseg.checkpoint import load_model

        if self.threads:
            torch.set_num_threads(self.threads)
        self.torch = torch
        self.model = load_model(self.path, trust_checkpoint=self.trust_checkpoint).model.eval().to(self.device)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(batch).to(self.device))
            if isinstance(out, dict):
                out = out["out"]
            if self.device != "cpu":
                self.torch.cuda.synchronize()
            return out.float().cpu().numpy()

    def _deactivate_impl(self) -> None:
        self.model = None
