"""One vector-quantisation layer: codebook lookup, learning, commitment loss, straight-through.

Works on latents laid out as (B, D, F); the codebook sees them as rows (B * F, D).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codec.codebook import CodebookConfig, EuclideanCodebook


def straight_through(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """quantized in the forward pass, identity gradient to x in the backward pass."""
    return x + (quantized - x).detach()


def masked_mse(x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the samples of the batch selected by mask (B,) (all when None)."""
    if mask is None:
        return nn.functional.mse_loss(x, target)
    err = (x - target).pow(2).mean(dim=(1, 2))
    return (err * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class VQOutput:
    quantized: torch.Tensor    # (B, D, F) codebook vectors, no gradient path (see straight_through)
    codes: torch.Tensor        # (B, F)
    commitment: torch.Tensor   # scalar: ||x - sg(quantized)||^2, mean over active samples
    resets: int                # dead codes replaced in this step


class VectorQuantizer(nn.Module):
    """A single codebook of ``size`` codes of dimension ``dim``."""

    def __init__(self, dim: int, size: int, cfg: CodebookConfig | None = None) -> None:
        super().__init__()
        self.codebook = EuclideanCodebook(dim, size, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> VQOutput:
        """Quantise x (B, D, F). In training, the codebook learns from the samples where mask (B,) is true."""
        rows = x.detach().transpose(1, 2).reshape(-1, x.shape[1])         # (B * F, D)
        if self.training and not bool(self.codebook.initialized):
            self.codebook.init_kmeans(rows)
        codes = self.codebook.encode(rows)
        quantized = self.decode(codes.view(x.shape[0], x.shape[2]))          # before the codebook moves
        resets = 0
        if self.training:
            keep = slice(None) if mask is None else mask.bool().repeat_interleave(x.shape[2])
            resets = self.codebook.update(rows[keep], codes[keep])
        codes = codes.view(x.shape[0], x.shape[2])                           # (B, F)
        return VQOutput(quantized, codes, masked_mse(x, quantized.detach(), mask), resets)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D, F) -> codes (B, F)."""
        rows = x.transpose(1, 2).reshape(-1, x.shape[1])
        return self.codebook.encode(rows).view(x.shape[0], x.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, F) -> vectors (B, D, F)."""
        return self.codebook.decode(codes).transpose(1, 2)
