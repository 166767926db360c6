"""Frame-rate decoder: ConvNeXt blocks at the frame rate, a linear head, an inverse STFT.

    latent (B, D, F) -> conv (kernel k) -> ConvNeXt blocks x depth -> LayerNorm
                     -> linear head: per frame and channel, log-magnitude and phase of n_fft/2 + 1 bins
                     -> inverse STFT (Hann window, hop = the encoder's hop, n_fft = n_fft_factor * hop)
                     -> (B, channels, F * hop)

Every layer before the head runs at the frame rate (50 frames/s for the default hop of 320
at 16 kHz), as matrix products over (frames, channels), which a CPU executes near its GEMM
speed; the only sample-rate work is one inverse FFT per frame and the overlap-add. This is the
Vocos design (Siuzdak, 2023), written for this project's length contracts.

Lengths. The inverse STFT is centred ("same" padding): frame j's window covers samples
[j * hop - pad, j * hop - pad + n_fft) with pad = (n_fft - hop) / 2, so F frames give exactly
F * hop samples and the centre of frame j's window is the centre of its hop. The overlap-add
is divided by the summed squared window (the window envelope), which is positive everywhere
in the kept range because n_fft >= 2 * hop.

Receptive field. Frame f influences output samples [f * hop - L, f * hop + R] with L and R
from ``codec.streaming.output_span`` (rules for ``ConvNeXtBlock`` and ``ISTFTHead`` there), so
chunked decoding keeps its guarantee.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.convnext import ChannelNorm, ConvNeXtBlock, init_weights
from codec.layers import Conv1d

MAX_LOG_MAGNITUDE = math.log(100.0)         # magnitudes are capped at 100 (Vocos's clip), as log


@dataclass
class ISTFTConfig:
    dim: int = 384                          # width of the ConvNeXt blocks
    hidden: int = 1152                      # width of each block's pointwise MLP
    depth: int = 8                          # ConvNeXt blocks
    kernel_size: int = 7                    # depthwise conv of each block and the input conv (odd)
    n_fft_factor: int = 4                   # n_fft = n_fft_factor * hop (>= 2)

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "depth", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"istft.{name} must be a positive integer, got {value!r}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"istft.kernel_size must be odd (centred convolutions), got {self.kernel_size}")
        if isinstance(self.n_fft_factor, bool) or not isinstance(self.n_fft_factor, int) or self.n_fft_factor < 2:
            raise ValueError(f"istft.n_fft_factor must be an integer >= 2, got {self.n_fft_factor!r}")


def istft_same(spec: torch.Tensor, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Centred inverse STFT: spec (B, n_fft/2 + 1, F) complex -> (B, F * hop) real.

    Each frame's inverse real FFT is windowed and overlap-added at ``hop``; the sum is divided
    by the overlap-added squared window and trimmed by pad = (n_fft - hop) / 2 on the left,
    keeping F * hop samples (see the module docstring).
    """
    n_fft, frames = window.shape[0], spec.shape[-1]
    pieces = torch.fft.irfft(spec, n=n_fft, dim=1) * window[:, None]         # (B, n_fft, F)
    full = (frames - 1) * hop + n_fft
    fold = dict(output_size=(1, full), kernel_size=(1, n_fft), stride=(1, hop))
    audio = F.fold(pieces, **fold)[:, 0, 0]                                  # (B, full)
    envelope = F.fold(window.square()[None, :, None].expand(1, n_fft, frames), **fold)[0, 0, 0]
    pad = (n_fft - hop) // 2
    return audio[:, pad:pad + frames * hop] / envelope[pad:pad + frames * hop]


class ISTFTHead(nn.Module):
    """Per frame: linear -> log-magnitude and phase -> inverse STFT. (B, C_in, F) -> (B, channels, F * hop)"""

    def __init__(self, dim: int, channels: int, hop: int, n_fft: int) -> None:
        super().__init__()
        if (n_fft - hop) % 2:
            raise ValueError(f"n_fft - hop must be even for a centred inverse STFT, got {n_fft} and {hop}")
        self.channels, self.hop, self.n_fft = channels, hop, n_fft
        self.bins = n_fft // 2 + 1
        self.linear = nn.Linear(dim, channels * 2 * self.bins)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def trim(self) -> int:
        """Samples the centred inverse STFT drops on the left: frame j's window starts at j * hop - trim."""
        return (self.n_fft - self.hop) // 2

    @property
    def reach(self) -> tuple[int, int]:
        """(L, R): frame j changes exactly the samples [j * hop - L, j * hop + R], where its window is
        non-zero (the periodic Hann window is zero only at its first sample)."""
        return self.trim - 1, self.n_fft - 1 - self.trim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, frames = x.shape
        y = self.linear(x.transpose(1, 2))                                   # (B, F, channels * 2 * bins)
        y = y.reshape(batch, frames, self.channels, 2, self.bins).permute(0, 2, 3, 4, 1)
        magnitude = torch.exp(y[:, :, 0].clamp(max=MAX_LOG_MAGNITUDE))        # (B, channels, bins, F)
        phase = y[:, :, 1]
        spec = torch.polar(magnitude, phase).reshape(batch * self.channels, self.bins, frames)
        return istft_same(spec, self.hop, self.window).reshape(batch, self.channels, frames * self.hop)


class ISTFTDecoder(nn.Module):
    """(B, latent_dim, F) -> (B, channels, F * hop): ConvNeXt blocks at the frame rate and an inverse STFT."""

    def __init__(self, latent_dim: int, channels: int, hop: int, cfg: ISTFTConfig) -> None:
        super().__init__()
        blocks = [ConvNeXtBlock(cfg.dim, cfg.hidden, cfg.kernel_size, 1.0 / cfg.depth) for _ in range(cfg.depth)]
        self.net = nn.Sequential(Conv1d(latent_dim, cfg.dim, cfg.kernel_size), *blocks, ChannelNorm(cfg.dim),
                                 ISTFTHead(cfg.dim, channels, hop, cfg.n_fft_factor * hop))
        self.apply(init_weights)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)
