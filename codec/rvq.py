"""Residual vector quantizer: n_q codebooks, each quantising what the previous ones left.

The RVQ only loops and owns quantizer dropout; each stage is a ``VectorQuantizer``.

Gradients. Stage i quantises r_i = x - sum_{j<i} sg(q_j): the residual is formed from the
*detached* codebook vectors, so every r_i has an identity gradient to the encoder output x
and every stage's commitment loss ||r_i - sg(q_i)||^2 trains the encoder. (Subtracting the
straight-through output instead, as EnCodec's first release did, makes r_i for i >= 2 constant
in x and silently drops those gradients.) The straight-through estimator is applied once, to
the sum of the stages, so the decoder's gradient reaches x unscaled by the number of stages.
With factorised codes (``codebook_dim`` > 0) each stage applies it in its own low-dimensional
space instead, so that its projections learn: the decoder's gradient reaches x through every
active stage's projections (as in DAC), and the residuals stay formed from detached vectors.

Quantizer bypass (``bypass_p`` > 0, training only): that share of the samples, drawn per
sample over the global batch, hands the decoder the unquantised latent x instead of the
quantized one, as Mimi (Moshi's codec) trains with 50%. Every sample is still quantised, so
the codebooks, their EMA statistics and the commitment loss see the whole batch; only what
the decoder gets changes, so it also learns the continuous latent around the codebook vectors.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from codec import distributed as dist
from codec.bottleneck import BottleneckOutput
from codec.codebook import CodebookConfig
from codec.vq import VectorQuantizer, straight_through


def _rank_rows(drawn: torch.Tensor, batch: int) -> torch.Tensor:
    """This rank's ``batch`` rows of a draw made on rank 0 for the global batch (ranks in order)."""
    return drawn[dist.rank() * batch:(dist.rank() + 1) * batch]


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, n_q: int, size: int, cfg: CodebookConfig | None = None,
                 dropout: bool = True, dropout_per_sample: bool = False, codebook_dim: int = 0,
                 dropout_p: float = 1.0, bypass_p: float = 0.0) -> None:
        super().__init__()
        self.n_q, self.size = n_q, size
        self.dropout, self.dropout_per_sample, self.dropout_p = dropout, dropout_per_sample, dropout_p
        self.bypass_p = bypass_p
        self.factorised = codebook_dim > 0
        self.layers = nn.ModuleList(VectorQuantizer(dim, size, cfg, codebook_dim) for _ in range(n_q))

    def _active_per_sample(self, batch: int, n_q: int, device: torch.device) -> torch.Tensor | None:
        """Quantizer dropout: number of stages each sample uses (B,), or None for all n_q.

        Drawn uniformly from 1..n_q, once per batch (the same on every rank) or per sample
        (from one draw over the global batch, so that all ranks run the same stages). With
        ``dropout_p`` < 1 (checked by CodecConfig), only that share of batches (samples) draws
        from 1..n_q and the rest use all n_q (DAC's quantizer_dropout = 0.5: about 54% of
        batches then use all 12 codebooks), which trains the full rate more often.
        """
        if not (self.training and self.dropout) or self.dropout_p == 0.0:
            return None
        count = batch * dist.world_size() if self.dropout_per_sample else 1
        if self.dropout_p == 1.0:
            drawn = dist.broadcast_(torch.randint(1, n_q + 1, (count,), device=device))
        else:   # one uniform draw u: u < p drops to 1 + floor(u / p * n_q) stages, else all n_q
            u = dist.broadcast_(torch.rand((count,), device=device))
            drawn = torch.where(u < self.dropout_p, 1 + (u / self.dropout_p * n_q).long().clamp(max=n_q - 1),
                                torch.full_like(u, n_q, dtype=torch.long))
        if self.dropout_per_sample:   # drawn for the global batch on rank 0: every rank runs the same stages
            return _rank_rows(drawn, batch)
        return drawn.expand(batch)

    def forward(self, x: torch.Tensor, n_q: int | None = None) -> BottleneckOutput:
        """x (B, D, F) -> quantized latent, codes (B, n_used, F), commitment loss, bits per frame."""
        n_q = self.check_n_q(n_q)
        if torch.is_autocast_enabled(x.device.type):     # distances and EMA statistics in float32
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.float(), n_q)
        active = self._active_per_sample(x.shape[0], n_q, x.device)
        n_used = n_q if active is None else int(dist.all_reduce_max_(active.max().clone()))
        residual, quantized = x, torch.zeros_like(x)
        codes, commitment, metrics = [], x.new_zeros(()), {}
        for i, layer in enumerate(self.layers[:n_used]):
            mask = None if active is None else (active > i).to(x.dtype)      # (B,)
            out = layer(residual, mask)
            q = out.quantized if mask is None else out.quantized * mask[:, None, None]
            quantized = quantized + q
            residual = residual - q.detach()
            commitment = commitment + out.commitment
            codes.append(out.codes)
            metrics[f"resets/{i}"] = float(out.resets)
        if self.training and x.requires_grad and not self.factorised:   # eval: bit-identical to decode(encode(x))
            quantized = straight_through(x, quantized)
        if self.training and self.bypass_p > 0.0:     # drawn only when on: the random stream is kept otherwise
            batch = x.shape[0]      # one draw over the global batch on rank 0, as for per-sample dropout
            u = dist.broadcast_(torch.rand(batch * dist.world_size(), device=x.device))
            bypass = _rank_rows(u, batch) < self.bypass_p
            quantized = torch.where(bypass[:, None, None], x, quantized)
        n_mean = torch.tensor(float(n_q) if active is None else active.float().mean().item(), device=x.device)
        return BottleneckOutput(quantized, {"commitment": commitment}, torch.stack(codes, 1),
                                n_mean * math.log2(self.size), metrics)

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """x (B, D, F) -> codes (B, n_q, F)."""
        residual, codes = x, []
        for layer in self.layers[:self.check_n_q(n_q)]:
            c = layer.encode(residual)
            residual = residual - layer.decode(c)
            codes.append(c)
        return torch.stack(codes, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, n, F) with n <= n_q -> latent (B, D, F), the sum of the first n stages."""
        self.check_n_q(codes.shape[1])
        latent = self.layers[0].decode(codes[:, 0])
        for i in range(1, codes.shape[1]):
            latent = latent + self.layers[i].decode(codes[:, i])
        return latent

    def health(self) -> list[dict[str, float]]:
        """Per stage: EMA usage perplexity and number of dead codes."""
        return [layer.codebook.health() for layer in self.layers]

    def check_n_q(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else int(n_q)
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be between 1 and {self.n_q}, got {n_q}")
        return n_q
