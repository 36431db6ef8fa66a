"""The model QAT trains: the FP32 ONNX graph with fake quantisation where calibrate's Q/DQ model quantises."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from edgeseg.quantization_aware.fake_quant import ActivationQuantizer, fake_quantize_weight
from edgeseg.quantization_aware.graph import OnnxGraph
from edgeseg.quantization_aware.placement import Placement


class QuantizedGraph(nn.Module):
    """``graph`` (an OnnxGraph) whose quantised inputs read INT8-rounded values.

    A learned weight read through a DequantizeLinear is fake-quantised per channel with
    scales that follow it (calibrate's writer derives them the same way from the final
    weights); a constant (an Add's 3, say) reads the Q/DQ model's own dequantized value;
    an activation is fake-quantised once per forward with its tensor's scale, shared by
    every node that reads it. ``record`` (a dict, or None) collects each activation's
    fake-quantised value, for comparing against the written model.
    """

    def __init__(self, graph: OnnxGraph, placement: Placement, learn_scales: bool = True):
        super().__init__()
        self.graph = graph
        self.placement = placement
        self.tensors = list(placement.activations)
        # one quantizer per scale the Q/DQ model writes: tensors sharing a scale initializer share it
        first: Dict[str, str] = {}  # scale initializer -> the first tensor that uses it
        for name in self.tensors:
            first.setdefault(placement.shared[name], name)
        groups = list(first)
        self.quantizers = nn.ModuleList(ActivationQuantizer(placement.activations[first[group]], learn_scales)
                                        for group in groups)
        self.index = {name: groups.index(placement.shared[name]) for name in self.tensors}
        self.record: Optional[Dict[str, torch.Tensor]] = None
        self._rounded: Dict[str, torch.Tensor] = {}
        graph.edge = self._edge

    def _edge(self, node: str, index: int, tensor: str, value: torch.Tensor) -> torch.Tensor:
        key = (node, index)
        source = self.placement.reads.get(key)
        if source is not None:  # the Q/DQ model's tensor behind this input: ``tensor`` itself, by construction
            if source not in self._rounded:
                self._rounded[source] = self.quantizers[self.index[source]](value)
                if self.record is not None:
                    self.record[source] = self._rounded[source].detach()
            return self._rounded[source]
        if key in self.placement.weights:
            if self.graph.slot.get(tensor, ("c",))[0] == "w":
                return fake_quantize_weight(value, self.placement.weights[key])
            return torch.as_tensor(self.placement.constants[key], device=value.device)
        return value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 throughout, also under train's CUDA autocast: the rounding to INT8 steps must see the values the
        # INT8 model will see, not bfloat16's 8-bit mantissa, and torch's fake-quant kernels take float32
        self._rounded = {}
        try:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.graph(x.float())
        finally:
            self._rounded = {}

    def scales(self) -> Dict[str, float]:
        """{tensor: scale} of every quantised activation."""
        return {name: float(self.quantizers[self.index[name]].scale.detach()) for name in self.tensors}

    def amax(self) -> Dict[str, float]:
        """{tensor: symmetric range} of every quantised activation, as calibrate's writer takes them."""
        return {name: self.quantizers[self.index[name]].amax for name in self.tensors}
