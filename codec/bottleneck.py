"""The bottleneck interface and the two continuous baselines (AE and VAE).

Every bottleneck maps the encoder output (B, D, F) to the decoder input (B, D, F) and returns
one ``BottleneckOutput``. The quantizers (``codec.rvq``) follow the same interface.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class BottleneckOutput:
    latent: torch.Tensor                    # (B, D, F) what the decoder sees
    losses: dict[str, torch.Tensor]         # named, unweighted loss terms (scalars)
    codes: torch.Tensor | None              # (B, n_q, F) for quantizers, None otherwise
    bits_per_frame: torch.Tensor            # scalar: the rate this bottleneck spends
    metrics: dict[str, float] = field(default_factory=dict)


class AEBottleneck(nn.Module):
    """Identity. Its rate is the width of the floats actually stored: float_bits * D per frame."""

    def __init__(self, dim: int, float_bits: int = 32) -> None:
        super().__init__()
        if float_bits not in (16, 32):
            raise ValueError(f"float_bits must be 16 or 32, got {float_bits}")
        self.dim, self.float_bits = dim, float_bits

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        bits = torch.tensor(float(self.float_bits * self.dim), device=z.device)
        return BottleneckOutput(z if self.training else self.encode(z), {}, None, bits)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """The continuous latent (B, D, F) rounded to the stored float width."""
        return z.half().float() if self.float_bits == 16 else z

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) in nats, element by element: (B, D, F) -> (B, D, F)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAEBottleneck(nn.Module):
    """Gaussian posterior q(z|x) = N(mu, sigma^2 I) from 1x1 convs; z = mu + sigma * eps in training.

    Its rate is the bits-back rate KL / ln 2 bits per frame, averaged over the batch.
    ``encode`` returns the posterior mean, the latent a deterministic decoder should use.
    """

    def __init__(self, dim: int, free_bits: float = 0.0, logvar_min: float = -30.0, logvar_max: float = 20.0) -> None:
        super().__init__()
        self.to_mu = nn.Conv1d(dim, dim, 1)
        self.to_logvar = nn.Conv1d(dim, dim, 1)
        self.free_bits = free_bits            # nats per latent dimension and frame that the KL loss forgives
        self.logvar_range = (logvar_min, logvar_max)

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, D, F) -> mean and log-variance, each (B, D, F)."""
        return self.to_mu(h), self.to_logvar(h).clamp(*self.logvar_range)

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        mu, logvar = self.posterior(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        kl_per_dim = gaussian_kl(mu, logvar).mean(dim=(0, 2))        # (D,) nats per frame
        kl = kl_per_dim.sum()
        # free bits (Kingma et al. 2016): dimensions under the floor cost nothing, so they may carry information
        loss = kl_per_dim.clamp(min=self.free_bits).sum() if self.free_bits > 0 else kl
        return BottleneckOutput(z, {"kl": loss}, None, kl.detach() / math.log(2))

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """The posterior mean (B, D, F): a continuous latent, not codes."""
        return self.posterior(h)[0]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent
