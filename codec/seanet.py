"""SEANet-style convolutional waveform encoder and decoder.

Encoder: input conv -> for each stride s: residual units (dilations 1, 3, 9) and a strided
conv (kernel 2s) that doubles the channels -> final conv to the latent dimension.
Decoder: the mirror image, upsampling with transposed convolutions.

Both work on lengths that are multiples of ``hop_length = prod(strides)``; the model pads
its input to such a length (see ``codec.model``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from codec.layers import Conv1d, ConvTranspose1d, ResidualUnit, activation


@dataclass
class SEANetConfig:
    channels: int = 1                     # audio channels the model sees
    base_channels: int = 16               # width after the input conv; doubles at each stride (16: >100x real time on 2 CPU threads)
    max_channels: int = 512               # cap on the width of the deepest blocks
    strides: tuple[int, ...] = (2, 4, 5, 8)
    latent_dim: int = 128
    dilations: tuple[int, ...] = (1, 3, 9)
    kernel_size: int = 7                  # input and output convs
    residual_kernel_size: int = 3
    compress: int = 2                     # residual units squeeze channels by this factor
    activation: str = "elu"               # "elu" or "snake"
    causal: bool = False

    def __post_init__(self) -> None:
        self.strides = tuple(int(s) for s in self.strides)
        self.dilations = tuple(int(d) for d in self.dilations)

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    def widths(self) -> list[int]:
        """Channel width before each downsampling stage and after the last one."""
        return [min(self.base_channels * 2 ** i, self.max_channels) for i in range(len(self.strides) + 1)]


def _residual_stack(cfg: SEANetConfig, channels: int) -> list[nn.Module]:
    return [ResidualUnit(channels, d, cfg.residual_kernel_size, cfg.compress, cfg.activation, cfg.causal)
            for d in cfg.dilations]


class SEANetEncoder(nn.Module):
    """(B, channels, T) -> (B, latent_dim, T // hop_length); T must be a multiple of hop_length."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        widths = cfg.widths()
        layers: list[nn.Module] = [Conv1d(cfg.channels, widths[0], cfg.kernel_size, causal=cfg.causal)]
        for stride, w_in, w_out in zip(cfg.strides, widths, widths[1:]):
            layers += _residual_stack(cfg, w_in)
            layers += [activation(cfg.activation, w_in),
                       Conv1d(w_in, w_out, 2 * stride, stride=stride, causal=cfg.causal)]
        layers += [activation(cfg.activation, widths[-1]),
                   Conv1d(widths[-1], cfg.latent_dim, cfg.kernel_size, causal=cfg.causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.net(wav)


class SEANetDecoder(nn.Module):
    """(B, latent_dim, F) -> (B, channels, F * hop_length)."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        widths = cfg.widths()[::-1]
        layers: list[nn.Module] = [Conv1d(cfg.latent_dim, widths[0], cfg.kernel_size, causal=cfg.causal)]
        for stride, w_in, w_out in zip(cfg.strides[::-1], widths, widths[1:]):
            layers += [activation(cfg.activation, w_in),
                       ConvTranspose1d(w_in, w_out, 2 * stride, stride=stride, causal=cfg.causal)]
            layers += _residual_stack(cfg, w_out)
        layers += [activation(cfg.activation, widths[-1]),
                   Conv1d(widths[-1], cfg.channels, cfg.kernel_size, causal=cfg.causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)
