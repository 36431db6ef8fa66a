"""A SegFormer-B0-style transformer (Xie et al., 2021): Mix Transformer encoder, all-MLP decoder.

The edge-sized member of the transformer family (3.7 M parameters at B0); SETR, Swin and
Mask2Former need several times the memory and latency and are not offered for the edge.
Four stages of overlapping patch embeddings (strides 4, 8, 16, 32), efficient
self-attention whose keys/values are spatially reduced by ``sr_ratio``, and Mix-FFN
(a 3x3 depthwise convolution between the two linear layers gives positional
information without positional encodings).

Pruning: the attention projections and the residual width are coupled to the head
split, so ``unprunable_layers`` keeps them whole; the Mix-FFN hidden width and the
decoder prune like any convolution.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgeseg.arch.registry import register


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride, padding=patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor):
        x = self.proj(x)
        height, width = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class EfficientSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio) if sr_ratio > 1 else None
        self.norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, tokens, dim = x.shape
        q = self.q(x).reshape(batch, tokens, self.heads, dim // self.heads).transpose(1, 2)
        context = x
        if self.sr is not None:  # keys and values from a sr_ratio-times smaller map: attention cost / sr^2
            spatial = x.transpose(1, 2).reshape(batch, dim, height, width)
            context = self.norm(self.sr(spatial).flatten(2).transpose(1, 2))
        k, v = self.kv(context).reshape(batch, -1, 2, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = self.fc1(x)
        batch, tokens, hidden = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(batch, hidden, height, width)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = EfficientSelfAttention(dim, heads, sr_ratio)
        self.ffn = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.attention(self.norm1(x), height, width)
        return x + self.ffn(self.norm2(x), height, width)


class SegFormer(nn.Module):
    def __init__(self, num_classes: int, dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), heads=(1, 2, 5, 8),
                 sr_ratios=(8, 4, 2, 1), decoder_width: int = 256):
        super().__init__()
        in_dims = (3,) + tuple(dims[:-1])
        self.embeds = nn.ModuleList([OverlapPatchEmbed(i, d, 7 if s == 0 else 3, 4 if s == 0 else 2)
                                     for s, (i, d) in enumerate(zip(in_dims, dims))])
        self.stages = nn.ModuleList([nn.ModuleList([Block(d, h, r) for _ in range(n)])
                                     for d, h, r, n in zip(dims, heads, sr_ratios, depths)])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in dims])
        self.decoder_proj = nn.ModuleList([nn.Conv2d(d, decoder_width, 1) for d in dims])  # the per-stage MLPs
        self.fuse = nn.Sequential(nn.Conv2d(4 * decoder_width, decoder_width, 1, bias=False),
                                  nn.BatchNorm2d(decoder_width), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(decoder_width, num_classes, 1)

    def unprunable_layers(self) -> List[nn.Module]:
        """Layers whose widths the attention heads or the residual stream fix."""
        keep: List[nn.Module] = list(self.embeds) + list(self.norms)
        for stage in self.stages:
            for block in stage:
                keep += [block.norm1, block.norm2, block.attention, block.ffn.fc2]
        return keep

    def forward(self, x: Tensor) -> Tensor:
        size, features = x.shape[-2:], []
        for embed, blocks, norm in zip(self.embeds, self.stages, self.norms):
            x, height, width = embed(x)
            for block in blocks:
                x = block(x, height, width)
            x = norm(x).transpose(1, 2).reshape(x.shape[0], -1, height, width)
            features.append(x)
        target = features[0].shape[-2:]
        decoded = [F.interpolate(proj(f), size=target, mode="bilinear", align_corners=False)
                   for proj, f in zip(self.decoder_proj, features)]
        y = self.fuse(torch.cat(decoded[::-1], dim=1))
        return F.interpolate(self.classifier(y), size=size, mode="bilinear", align_corners=False)


@register("segformer-b0", "SegFormer-B0-style transformer: Mix Transformer encoder + all-MLP decoder",
          aliases=("segformer",))
def segformer_b0(num_classes: int) -> nn.Module:
    return SegFormer(num_classes)
