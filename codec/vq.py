"""One vector-quantisation layer: codebook lookup, learning, commitment loss, straight-through.

Works on latents laid out as (B, D, F); the codebook sees them as rows (B * F, D).

Factorised codes (``codebook_dim`` > 0, as in DAC): the layer projects the latent down to
``codebook_dim`` dimensions with a learned 1x1 convolution, looks the code up (and learns the
codebook by EMA) there, and projects the code vector back up with another. A low-dimensional
lookup uses many more of the codes; the projections learn from the decoder's gradient, which
reaches them through a straight-through estimator in the low-dimensional space.
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
    quantized: torch.Tensor    # (B, D, F) codebook vectors; a gradient path only when factorised
    codes: torch.Tensor        # (B, F)
    commitment: torch.Tensor   # scalar: ||z - sg(code vector)||^2, mean over active samples (z: x, or x projected)
    resets: int                # dead codes replaced in this step


class VectorQuantizer(nn.Module):
    """A single codebook of ``size`` codes, of dimension ``dim`` or, factorised, ``codebook_dim``."""

    def __init__(self, dim: int, size: int, cfg: CodebookConfig | None = None, codebook_dim: int = 0) -> None:
        super().__init__()
        self.factorised = codebook_dim > 0
        if self.factorised:
            self.project_in = nn.Conv1d(dim, codebook_dim, 1)
            self.project_out = nn.Conv1d(codebook_dim, dim, 1)
        self.codebook = EuclideanCodebook(codebook_dim or dim, size, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> VQOutput:
        """Quantise x (B, D, F). In training, the codebook learns from the samples where mask (B,) is true."""
        z = self.project_in(x) if self.factorised else x
        rows = z.detach().transpose(1, 2).reshape(-1, z.shape[1])         # (B * F, d)
        if self.training and not bool(self.codebook.initialized):
            self.codebook.init_kmeans(rows)
        codes = self.codebook.encode(rows)
        vectors = self.codebook.decode(codes.view(z.shape[0], z.shape[2])).transpose(1, 2)  # before it moves
        resets = 0
        if self.training:
            keep = slice(None) if mask is None else mask.bool().repeat_interleave(z.shape[2])
            resets = self.codebook.update(rows[keep], codes[keep])
        codes = codes.view(z.shape[0], z.shape[2])                           # (B, F)
        commitment = masked_mse(z, vectors.detach(), mask)
        if not self.factorised:
            return VQOutput(vectors, codes, commitment, resets)
        if self.training and z.requires_grad:     # eval output stays bit-identical to decode(encode(x))
            vectors = straight_through(z, vectors)
        return VQOutput(self.project_out(vectors), codes, commitment, resets)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D, F) -> codes (B, F)."""
        z = self.project_in(x) if self.factorised else x
        rows = z.transpose(1, 2).reshape(-1, z.shape[1])
        return self.codebook.encode(rows).view(z.shape[0], z.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, F) -> vectors (B, D, F)."""
        vectors = self.codebook.decode(codes).transpose(1, 2)
        return self.project_out(vectors) if self.factorised else vectors
