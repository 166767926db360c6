"""ConvNeXt blocks at the frame rate, and the frame-rate encoder built from them.

    wav (B, channels, F * hop) -> strided conv (kernel window_factor * hop, stride hop): one
                                  learned filterbank frame per hop, centred on its hop
                               -> ConvNeXt blocks x depth -> LayerNorm -> 1x1 conv
                               -> latent (B, latent_dim, F)

The only sample-rate work is the stem, one matrix product per frame; everything after it runs
at the frame rate as matrix products over (frames, channels), like the inverse-STFT decoder
(``codec.istft``), which uses the same blocks. With window_factor 2 frame j reads samples
[j * hop - hop / 2, j * hop + 3 hop / 2) (the stem's length-exact padding, ``codec.layers``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.layers import Conv1d


@dataclass
class FrameEncoderConfig:
    dim: int = 256                          # width of the ConvNeXt blocks
    hidden: int = 768                       # width of each block's pointwise MLP
    depth: int = 6                          # ConvNeXt blocks
    kernel_size: int = 7                    # depthwise conv of each block (odd)
    window_factor: int = 2                  # the stem reads window_factor * hop samples per frame (>= 1)

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "depth", "kernel_size", "window_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"frame_encoder.{name} must be a positive integer, got {value!r}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"frame_encoder.kernel_size must be odd (centred convolutions), got {self.kernel_size}")


class ConvNeXtBlock(nn.Module):
    """x + gamma * MLP(LayerNorm(depthwise_conv(x))). (B, C, F) -> (B, C, F)"""

    def __init__(self, dim: int, hidden: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, hidden)
        self.pw2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)                      # (B, F, C): the MLP is a GEMM over frames
        y = self.pw2(F.gelu(self.pw1(self.norm(y)))) * self.gamma
        return x + y.transpose(1, 2)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of (B, C, F)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class FrameEncoder(nn.Module):
    """(B, channels, F * hop) -> (B, latent_dim, F): a strided stem, then ConvNeXt blocks at the frame rate."""

    def __init__(self, channels: int, latent_dim: int, hop: int, cfg: FrameEncoderConfig) -> None:
        super().__init__()
        blocks = [ConvNeXtBlock(cfg.dim, cfg.hidden, cfg.kernel_size, 1.0 / cfg.depth) for _ in range(cfg.depth)]
        self.net = nn.Sequential(Conv1d(channels, cfg.dim, cfg.window_factor * hop, stride=hop), *blocks,
                                 ChannelNorm(cfg.dim), Conv1d(cfg.dim, latent_dim, 1))
        self.apply(init_weights)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.net(wav)


def init_weights(module: nn.Module) -> None:
    """Truncated normal (std 0.02) weights and zero biases for the plain linear layers, as ConvNeXt
    does; the weight-normalised convolutions keep their own initialisation."""
    if isinstance(module, (nn.Linear, nn.Conv1d)) and not hasattr(module, "parametrizations"):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
